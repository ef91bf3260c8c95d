"""`manage.py batch template ...`, `batch schedule ...` and `batch run-again`: verbs this app adds
to the core's `batch` command through settings.BATCHSITE_COMMAND_VERBS.

Handlers get the core command (for its output, `_owner`, `_wait`, `_summary`) and the options.
Exit codes as the core's: 0 success (`--wait`: completed), 1 the batch ended otherwise, 2 bad usage.
"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError
from django.http import Http404

from jobs import selectors as core_selectors
from jobs import services as core_services
from jobs.errors import InvalidInput
from jobs.items import Item, parse_key_values, read_items_file
from jobs.models import Batch, BatchStatus
from jobs.schedules import cron, selectors, services
from jobs.schedules.models import DEFAULT_NAME_PATTERN, Missed, Overlap

BAD_USAGE = 2
FAILED = 1


def add_verbs(verbs) -> None:
    template = verbs.add_parser("template", help="Saved batch definitions: list, show, create, save, run, delete.")
    actions = template.add_subparsers(dest="template_verb", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="List templates.")
    listing.add_argument("--user", help="Only this owner's templates.")
    listing.set_defaults(handler=template_list)

    show = actions.add_parser("show", help="Show a template and its last runs.")
    show.add_argument("template", help="Template name or id.")
    show.add_argument("--user", help="The owner, when several users have a template of that name.")
    show.set_defaults(handler=template_show)

    create = actions.add_parser("create", help="Create a template from scratch.")
    create.add_argument("name", help="Template name (unique per owner).")
    create.add_argument("--type", required=True, help="Operation type.")
    create.add_argument(
        "--items", type=Path, help="Items file: .jsonl, .csv or .xlsx with a label column, or a JSON array."
    )
    create.add_argument("--item", action="append", default=[], help="One item label (repeatable).")
    create.add_argument("--param", action="append", default=[], help="Base parameter key=value (repeatable).")
    create.add_argument("--option", action="append", default=[], help="Batch option key=value, e.g. max_parallel=2.")
    create.add_argument("--name-pattern", default=DEFAULT_NAME_PATTERN, help="{template} {date} {datetime} {n}.")
    create.add_argument("--description", default="")
    create.add_argument("--user", help="Owner username (default: the first superuser).")
    create.add_argument("--team", metavar="SLUG", help="The team it belongs to (--user must be its admin).")
    create.set_defaults(handler=template_create)

    save = actions.add_parser("save", help="Save a batch as a template (its type, items, params, options).")
    save.add_argument("batch", help="Batch id or short id.")
    save.add_argument("name", help="Template name.")
    save.add_argument("--user", help="Owner of the template (default: the batch's owner).")
    save.set_defaults(handler=template_save)

    run = actions.add_parser("run", help="Run a template, with overrides.")
    run.add_argument("template", help="Template name or id.")
    run.add_argument("--user", help="The owner, when several users have a template of that name.")
    run.add_argument("--param", action="append", default=[], help="Override a parameter: key=value (repeatable).")
    run.add_argument("--option", action="append", default=[], help="Override an option: key=value (repeatable).")
    run.add_argument("--only", action="append", default=[], help="Run only this item label (repeatable).")
    run.add_argument("--wait", action="store_true", help="Draw a live progress bar until the batch ends.")
    run.set_defaults(handler=template_run)

    delete = actions.add_parser("delete", help="Delete a template and its schedules (its batches stay).")
    delete.add_argument("template", help="Template name or id.")
    delete.add_argument("--user")
    delete.set_defaults(handler=template_delete)

    schedule = verbs.add_parser("schedule", help="Run templates on a cron: list, add, enable, disable, remove.")
    schedule_actions = schedule.add_subparsers(dest="schedule_verb", required=True, metavar="ACTION")
    listing = schedule_actions.add_parser("list", help="List schedules with their next run.")
    listing.add_argument("--user", help="Only this owner's schedules.")
    listing.set_defaults(handler=schedule_list)
    add = schedule_actions.add_parser("add", help="Schedule a template.")
    add.add_argument("template", help="Template name or id.")
    add.add_argument("cron", help='Cron expression in quotes, e.g. "0 6 * * mon".')
    add.add_argument("--timezone", default="UTC", help="IANA time zone, e.g. Europe/Paris (default UTC).")
    add.add_argument("--overlap", choices=Overlap.values, default=Overlap.SKIP)
    add.add_argument("--missed", choices=Missed.values, default=Missed.SKIP)
    add.add_argument("--disabled", action="store_true", help="Add it disabled.")
    add.add_argument("--user", help="The template's owner, when several users have a template of that name.")
    add.set_defaults(handler=schedule_add)
    for verb, text, handler in (
        ("enable", "Enable a schedule (its next run counts from now).", schedule_enable),
        ("disable", "Disable a schedule.", schedule_disable),
        ("remove", "Delete a schedule (its batches stay).", schedule_remove),
    ):
        sub = schedule_actions.add_parser(verb, help=text)
        sub.add_argument("schedule", type=int, help="Schedule id (see `batch schedule list`).")
        sub.set_defaults(handler=handler)

    again = verbs.add_parser("run-again", help="Start a new batch with the same type, items, params and options.")
    again.add_argument("batch", help="Batch id or short id.")
    again.add_argument("--user", help="Owner of the new batch (default: the batch's owner).")
    again.add_argument("--wait", action="store_true", help="Draw a live progress bar until the batch ends.")
    again.set_defaults(handler=run_again)


# --- helpers ----------------------------------------------------------------------------------


def _user(command, username: str | None):
    return command._owner(username) if username else None


def _template(command, options):
    try:
        return selectors.template_find(_user(command, options.get("user")), options["template"])
    except Http404 as exc:
        raise CommandError(str(exc) or "No such template.", returncode=BAD_USAGE) from None


def _schedule(options):
    try:
        return selectors.schedule_get_visible(None, options["schedule"])
    except Http404:
        raise CommandError(f"No schedule {options['schedule']}.", returncode=BAD_USAGE) from None


def _batch(reference: str) -> Batch:
    try:
        return core_selectors.batch_find(reference)
    except (Batch.DoesNotExist, Batch.MultipleObjectsReturned) as exc:
        raise CommandError(str(exc) or f"No batch {reference!r}.", returncode=BAD_USAGE) from None


def _finish(command, batch: Batch, wait: bool) -> None:
    if not wait:
        return
    batch = command._wait(batch)
    command.stdout.write(command._summary(batch))
    if batch.status != BatchStatus.COMPLETED:
        raise SystemExit(FAILED)


# --- templates --------------------------------------------------------------------------------


def template_list(command, options: dict[str, Any]) -> None:
    templates = list(selectors.templates_visible_to(_user(command, options["user"])))
    command.stdout.write(f"{'ID':>5}  {'NAME':24}  {'TYPE':16}  {'ITEMS':>6}  {'RUNS':>5}  OWNER")
    for t in templates:
        command.stdout.write(
            f"{t.id:>5}  {t.name[:24]:24}  {t.type[:16]:16}  {len(t.items):>6}  {t.run_count:>5}  {t.owner.username}"
        )
    command.stdout.write(f"{len(templates)} template(s).")


def template_show(command, options: dict[str, Any]) -> None:
    template = _template(command, options)
    out = command.stdout.write
    out(f"Template {template.id}: {template.name} (owner {template.owner.username})")
    out(f"  type {template.type}, batches named {template.name_pattern!r}, {template.run_count} run(s)")
    params, _ = selectors.template_masked(template)
    out(f"  params {json.dumps(params)}; options {json.dumps(template.options)}")
    out(f"  {len(template.items)} item(s): {', '.join(i['label'] for i in template.items[:10])}")
    for schedule in template.schedules.all():
        state = "enabled" if schedule.enabled else "disabled"
        out(f"  schedule {schedule.id}: {cron.describe(schedule.cron, schedule.timezone)}, {state}")
    for run in selectors.template_runs(template)[:10]:
        summary = selectors.run_summary(run)
        out(
            f"    #{summary['number']:<4} {summary['status']:15} {summary['completed']}/{summary['total']} completed, "
            f"{summary['failed']} failed  {run.batch.short_id}  {summary['batch_name']}"
        )


def template_create(command, options: dict[str, Any]) -> None:
    items: list[Any] = [Item(label=label) for label in options["item"]]
    if options["items"]:
        try:
            items += read_items_file(options["items"].read_bytes(), options["items"].name).items
        except OSError as exc:
            raise CommandError(f"Cannot read items file: {exc}", returncode=BAD_USAGE) from None
    template = services.template_create(
        owner=command._owner(options["user"]),
        team=options["team"],
        name=options["name"],
        type=options["type"],
        name_pattern=options["name_pattern"],
        description=options["description"],
        items=[{"label": item.label, "params": item.params} for item in items],
        params=parse_key_values(options["param"]),
        options=parse_key_values(options["option"], path="options"),
    )
    command.stdout.write(f"Created template {template.id} {template.name} ({len(template.items)} items).")


def template_save(command, options: dict[str, Any]) -> None:
    batch = _batch(options["batch"])
    owner = command._owner(options["user"]) if options["user"] else batch.owner
    template = services.template_from_batch(batch=batch, owner=owner, name=options["name"])
    command.stdout.write(f"Saved batch {batch.short_id} as template {template.id} {template.name}.")


def template_run(command, options: dict[str, Any]) -> None:
    template = _template(command, options)
    run = services.template_run(
        template=template,
        params=parse_key_values(options["param"]),
        options=parse_key_values(options["option"], path="options"),
        items=options["only"] or None,
    )
    batch = run.batch
    command.stdout.write(f"Created batch {batch.id} ({batch.name}: run #{run.number}, {batch.total} operations).")
    _finish(command, batch, options["wait"])


def template_delete(command, options: dict[str, Any]) -> None:
    template = _template(command, options)
    services.template_delete(template=template)
    command.stdout.write(f"Deleted template {template.name}.")


# --- schedules --------------------------------------------------------------------------------


def schedule_list(command, options: dict[str, Any]) -> None:
    schedules = list(selectors.schedules_visible_to(_user(command, options["user"])))
    command.stdout.write(
        f"{'ID':>4}  {'TEMPLATE':20}  {'CRON':16}  {'ZONE':16}  {'STATE':8}  {'NEXT RUN (UTC)':16}  WHEN"
    )
    for s in schedules:
        next_run = f"{s.next_run_at:%Y-%m-%d %H:%M}" if s.next_run_at else "-"
        state = "enabled" if s.enabled else "disabled"
        command.stdout.write(
            f"{s.id:>4}  {s.template.name[:20]:20}  {s.cron:16}  {s.timezone[:16]:16}  {state:8}  {next_run:16}  "
            f"{cron.describe(s.cron, s.timezone)}"
        )
    command.stdout.write(f"{len(schedules)} schedule(s).")


def schedule_add(command, options: dict[str, Any]) -> None:
    template = _template(command, options)
    schedule = services.schedule_create(
        template=template,
        cron=options["cron"],
        timezone=options["timezone"],
        overlap=options["overlap"],
        missed=options["missed"],
        enabled=not options["disabled"],
    )
    command.stdout.write(f"Added schedule {schedule.id}: {cron.describe(schedule.cron, schedule.timezone)}.")
    _print_next(command, schedule)


def _print_next(command, schedule) -> None:
    described = selectors.schedule_description(schedule)
    for slot in described["next_runs"]:
        command.stdout.write(f"  next: {slot:%a %Y-%m-%d %H:%M %Z}")


def schedule_enable(command, options: dict[str, Any]) -> None:
    schedule = services.schedule_set_enabled(schedule=_schedule(options), enabled=True)
    command.stdout.write(f"Enabled schedule {schedule.id}.")
    _print_next(command, schedule)


def schedule_disable(command, options: dict[str, Any]) -> None:
    schedule = services.schedule_set_enabled(schedule=_schedule(options), enabled=False)
    command.stdout.write(f"Disabled schedule {schedule.id}.")


def schedule_remove(command, options: dict[str, Any]) -> None:
    schedule = _schedule(options)
    services.schedule_delete(schedule=schedule)
    command.stdout.write(f"Removed schedule {schedule.id}.")


# --- a batch ----------------------------------------------------------------------------------


def run_again(command, options: dict[str, Any]) -> None:
    batch = _batch(options["batch"])
    owner = command._owner(options["user"]) if options["user"] else batch.owner
    try:
        new_batch = core_services.batch_run_again(batch=batch, by=owner)
    except InvalidInput as exc:
        raise CommandError(f"Cannot run batch {batch.short_id} again: {exc}", returncode=BAD_USAGE) from None
    command.stdout.write(f"Created batch {new_batch.id} ({new_batch.total} operations of {new_batch.type}).")
    _finish(command, new_batch, options["wait"])
