"""Every write of templates and schedules, in a transaction; batches are made by jobs.services.

A template run is a normal batch created through `services.batch_create` and linked to its template
by a TemplateRun row written in the same transaction: either both exist or neither.
"""

import logging
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from jobs import secrets, services
from jobs.audit import recorder as audit
from jobs.errors import IllegalTransition, InvalidInput
from jobs.forms import BatchOptionsForm
from jobs.items import Item, normalize_items
from jobs.models import TERMINAL_STATUSES, Batch, BatchStatus
from jobs.optypes import get_type
from jobs.schedules import cron
from jobs.schedules.models import (
    DEFAULT_NAME_PATTERN,
    BatchTemplate,
    Missed,
    Overlap,
    RunTrigger,
    Schedule,
    TemplateRun,
)
from jobs.teams.selectors import team_for_owner

logger = logging.getLogger(__name__)

PLACEHOLDERS = ("template", "date", "datetime", "n")
# Options a template may hold: the batch options other than the name (which the pattern makes).
OPTION_NAMES = tuple(name for name in BatchOptionsForm.base_fields if name not in ("name", "description"))
TEMPLATE_FIELDS = ("name", "type", "name_pattern", "description", "items", "params", "options")


# --- templates --------------------------------------------------------------------------------


def render_name(pattern: str, *, template: str, n: int, moment: datetime, zone_name: str | None = None) -> str:
    """A batch name from a pattern: {template}, {date} (2026-03-30), {datetime} (2026-03-30 06:00 CEST:
    in the schedule's zone, named, as a run started by hand names its own), {n} (run number);
    format specs work ({n:03d}). Raises InvalidInput for anything else."""
    local = timezone.localtime(moment, cron.zone(zone_name) if zone_name else None)
    values = {"template": template, "date": f"{local:%Y-%m-%d}", "datetime": f"{local:%Y-%m-%d %H:%M %Z}", "n": n}
    try:
        for _, field, _, _ in string.Formatter().parse(pattern):
            if field is not None and field not in PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{field}}}")
        name = pattern.format(**values).strip()
    except (ValueError, IndexError, KeyError) as exc:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise InvalidInput({"name_pattern": [f"Invalid name pattern {pattern!r}: {exc}. Use {known}."]}) from None
    return name[:200]


def _clean_definition(data: dict[str, Any], current: BatchTemplate | None = None) -> dict[str, Any]:
    """Check a template's fields as batch creation would check them, without creating anything.

    Returns the values to store: items as {"label", "params"} objects, params and options as given
    (so a default changed later applies to later runs), the type's secret params encrypted as on a
    batch. Values may come stored (encrypted) or, from a form that showed `current` masked, still
    masked: both stand for the current secret. Raises InvalidInput with field paths."""
    errors: dict[str, list[str]] = {}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["A name is required."]
    elif len(name.strip()) > 100:
        errors["name"] = ["At most 100 characters."]
    pattern = data.get("name_pattern") or DEFAULT_NAME_PATTERN
    try:
        if not render_name(pattern, template="t", n=1, moment=timezone.now()):
            errors["name_pattern"] = ["The pattern gives an empty name."]
    except InvalidInput as exc:
        errors.update(exc.errors)
    if len(pattern) > 200:
        errors["name_pattern"] = ["At most 200 characters."]
    description = data.get("description") or ""
    if not isinstance(description, str):
        errors["description"] = ["Must be text."]
    try:
        optype = get_type(data.get("type") or "")
    except InvalidInput as exc:
        raise InvalidInput({**errors, **exc.errors}) from None

    items: list[Item] = []
    try:
        items = normalize_items(data.get("items") or [])
        if not items:
            errors["items"] = ["At least one item is required."]
    except InvalidInput as exc:
        errors.update(exc.errors)
    params = data.get("params") or {}
    if isinstance(params, dict):
        params = _revealed(optype, params, current.params if current else None)
    stored_items = {i["label"]: i.get("params") or {} for i in current.items} if current else {}
    items = [Item(item.label, _revealed(optype, item.params, stored_items.get(item.label))) for item in items]
    options = data.get("options") or {}
    if not isinstance(options, dict):
        errors["options"] = ["Must be an object."]
        options = {}
    errors.update(_check_options(options))
    try:
        base = optype.clean_params(params)
    except InvalidInput as exc:
        errors.update(exc.errors)
        base = None
    if base is not None:
        for index, item in enumerate(items):
            if item.params:
                try:
                    optype.clean_params({**params, **item.params}, path=f"items[{index}].params")
                except InvalidInput as exc:
                    errors.update(exc.errors)
    if errors:
        raise InvalidInput(errors)
    assert isinstance(name, str)
    return {
        "name": name.strip(),
        "type": optype.key,
        "name_pattern": pattern,
        "description": description,
        "items": [{"label": item.label, "params": secrets.encrypt_params(optype, item.params)} for item in items],
        "params": secrets.encrypt_params(optype, params),
        "options": options,
    }


def _revealed(optype, params: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """Params with encrypted secrets decrypted and masked ones given back their stored value."""
    params = secrets.reveal_params(optype, params)
    if stored:
        params = secrets.unmask_params(optype, params, secrets.reveal_params(optype, stored))
    return params


def template_secrets_revealed(template: BatchTemplate, optype) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The template's params and items with their secrets decrypted: what a run is made of."""
    items = [{**item, "params": secrets.reveal_params(optype, item.get("params") or {})} for item in template.items]
    return secrets.reveal_params(optype, template.params), items


def _check_options(options: dict[str, Any], path: str = "options") -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        errors[path] = [f"Unknown option(s): {', '.join(unknown)}. Known: {', '.join(OPTION_NAMES)}."]
    form = BatchOptionsForm(data={**BatchOptionsForm.defaults(), "name": "x", **options})
    if not form.is_valid():
        for field, messages in form.errors.items():
            if field in options:
                errors[f"{path}.{field}"] = [str(message) for message in messages]
    return errors


def template_create(*, owner, team: Any = None, **fields: Any) -> BatchTemplate:
    """Fields: name, type, items, and optionally name_pattern, description, params, options.
    `team` (slug, id or Team) makes it the team's: its admins only (UnknownReference, PermissionDenied)."""
    team = team_for_owner(owner, team, "manage")
    unknown = set(fields) - set(TEMPLATE_FIELDS)
    if unknown:
        raise InvalidInput({"body": [f"Unknown field(s): {', '.join(sorted(unknown))}."]})
    values = _clean_definition(fields)
    with transaction.atomic():
        if BatchTemplate.objects.filter(owner=owner, name=values["name"]).exists():
            raise InvalidInput({"name": [f"You already have a template named {values['name']!r}."]})
        template = BatchTemplate.objects.create(owner=owner, team=team, **values)
        audit.record(action="template.create", obj=template, actor=owner, summary=template.name)
        return template


def template_from_batch(*, batch: Batch, owner, name: str, name_pattern: str = "", team: Any = None) -> BatchTemplate:
    """A template of what `batch` is made of: type, items with their params, params, options."""
    # Secret params are stored encrypted on the batch; the template's own checks read them in clear.
    optype = get_type(batch.type)
    items = [
        {"label": label, "params": secrets.reveal_params(optype, params)}
        for label, params in batch.operations.order_by("seq").values_list("label", "params").iterator(2000)
    ]
    return template_create(
        owner=owner,
        team=team,
        name=name,
        type=batch.type,
        name_pattern=name_pattern or DEFAULT_NAME_PATTERN,
        description=batch.description,
        items=items,
        params=secrets.reveal_params(optype, batch.params),
        options={option: getattr(batch, option) for option in OPTION_NAMES if hasattr(batch, option)},
    )


def template_update(*, template: BatchTemplate, **changes: Any) -> BatchTemplate:
    unknown = set(changes) - set(TEMPLATE_FIELDS)
    if unknown:
        raise InvalidInput({"body": [f"Unknown field(s): {', '.join(sorted(unknown))}."]})
    current = {field: getattr(template, field) for field in TEMPLATE_FIELDS}
    values = _clean_definition({**current, **changes}, current=template)
    with transaction.atomic():
        if (
            values["name"] != template.name
            and BatchTemplate.objects.filter(owner=template.owner_id, name=values["name"]).exists()
        ):
            raise InvalidInput({"name": [f"You already have a template named {values['name']!r}."]})
        BatchTemplate.objects.filter(pk=template.pk).update(**values, updated_at=timezone.now())
        audit.record(action="template.update", obj=template, summary=f"{values['name']}: {', '.join(sorted(changes))}")
    template.refresh_from_db()
    return template


def template_delete(*, template: BatchTemplate) -> None:
    """The template and its schedules; the batches it made stay."""
    with transaction.atomic():
        audit.record(action="template.delete", obj=template, summary=template.name)
        BatchTemplate.objects.filter(pk=template.pk).delete()


def _override_items(template_items: list[dict[str, Any]], template_name: str, labels: Any) -> list[dict[str, Any]]:
    """The template's items whose labels are given, in the order given (a subset)."""
    if not isinstance(labels, list) or not labels:
        raise InvalidInput({"items": ["Give a non-empty list of the template's item labels."]})
    by_label = {item["label"]: item for item in template_items}
    chosen, errors = [], {}
    for index, label in enumerate(labels):
        if isinstance(label, dict):
            label = label.get("label")
        if not isinstance(label, str) or label.strip() not in by_label:
            errors[f"items[{index}]"] = [f"{label!r} is not an item of template {template_name!r}."]
            continue
        chosen.append(by_label[label.strip()])
    if errors:
        raise InvalidInput(errors)
    return chosen


def template_run(
    *,
    template: BatchTemplate,
    params: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    items: list[Any] | None = None,
    trigger: str = RunTrigger.MANUAL,
    schedule: Schedule | None = None,
    slot: datetime | None = None,
    start: bool = True,
    rate_limit: bool = True,
    by=None,
) -> TemplateRun:
    """Create (and start, unless `start` is false) a batch from the template with overrides:
    `params` overlay the template's, `options` overlay its options, `items` picks a subset of its
    item labels. The batch belongs to the template's owner, or for a team's template to its team
    (made by `by`, the person who runs it; a schedule's by the template's maker). A person's run counts against the
    creation rate limit (RateLimited); a schedule's runs pass `rate_limit=False`.

    Raises InvalidInput with field paths (the type gone, overrides the type rejects); nothing is
    written then, not even the run number."""
    try:
        optype = get_type(template.type)
    except InvalidInput:
        raise InvalidInput(
            {"type": [f"Operation type {template.type!r} of template {template.name!r} is not registered any more."]},
            message="The template's operation type was removed; nothing was run.",
        ) from None
    if params is not None and not isinstance(params, dict):
        raise InvalidInput({"params": ["Must be an object."]})
    options = options or {}
    if not isinstance(options, dict):
        raise InvalidInput({"options": ["Must be an object."]})
    option_errors = _check_options(options, path="options")
    if option_errors:
        raise InvalidInput(option_errors)
    base_params, template_items = template_secrets_revealed(template, optype)
    # A run form prefilled with the template's masked secrets sends the masks back unchanged.
    params = secrets.unmask_params(optype, params or {}, base_params)
    run_items = _override_items(template_items, template.name, items) if items is not None else template_items
    merged_options = {**template.options, **options}
    now = timezone.now()
    zone_name = schedule.timezone if schedule is not None else None
    with transaction.atomic():
        BatchTemplate.objects.filter(pk=template.pk).update(run_count=F("run_count") + 1)
        number = BatchTemplate.objects.values_list("run_count", flat=True).get(pk=template.pk)
        name = render_name(template.name_pattern, template=template.name, n=number, moment=now, zone_name=zone_name)
        batch = services.batch_create(
            owner=by if by is not None and template.team_id is not None else template.owner,
            team=template.team,
            type=optype.key,
            name=name or template.name,
            description=template.description,
            items=run_items,
            params={**base_params, **params},
            start=start,
            rate_limit=rate_limit,
            **merged_options,
        )
        run = TemplateRun.objects.create(
            template=template, batch=batch, number=number, trigger=trigger, schedule=schedule, slot=slot
        )
    template.run_count = number
    return run


def batch_save_as_template(*, batch: Batch, owner, name: str, team: Any = None) -> BatchTemplate:
    return template_from_batch(batch=batch, owner=owner, name=name, team=team)


# --- schedules --------------------------------------------------------------------------------

SCHEDULE_FIELDS = ("cron", "timezone", "enabled", "overlap", "missed")


def schedule_validate(values: dict[str, Any]) -> dict[str, Any]:
    """Checked and normalised schedule fields, or InvalidInput quoting a bad cron or time zone."""
    errors: dict[str, list[str]] = {}
    expression = values.get("cron")
    zone_name = values.get("timezone") or "UTC"
    if not isinstance(expression, str) or not expression.strip():
        errors["cron"] = ["A cron expression is required, e.g. 0 6 * * mon."]
    else:
        expression = " ".join(expression.split())
        try:
            cron.check(expression, zone_name)
        except InvalidInput as exc:
            errors.update(exc.errors)
    if values.get("overlap", Overlap.SKIP) not in Overlap.values:
        errors["overlap"] = [f"Must be one of {', '.join(Overlap.values)}; got {values.get('overlap')!r}."]
    if values.get("missed", Missed.SKIP) not in Missed.values:
        errors["missed"] = [f"Must be one of {', '.join(Missed.values)}; got {values.get('missed')!r}."]
    if not isinstance(values.get("enabled", True), bool):
        errors["enabled"] = ["Must be true or false."]
    if errors:
        raise InvalidInput(errors)
    return {
        "cron": expression,
        "timezone": zone_name,
        "enabled": values.get("enabled", True),
        "overlap": values.get("overlap", Overlap.SKIP),
        "missed": values.get("missed", Missed.SKIP),
    }


def schedule_create(*, template: BatchTemplate, **fields: Any) -> Schedule:
    """Fields: cron, timezone (default UTC), enabled (default true), overlap, missed."""
    unknown = set(fields) - set(SCHEDULE_FIELDS)
    if unknown:
        raise InvalidInput({"body": [f"Unknown field(s): {', '.join(sorted(unknown))}."]})
    values = schedule_validate(fields)
    next_run_at = cron.next_run(values["cron"], values["timezone"], timezone.now()) if values["enabled"] else None
    with transaction.atomic():
        schedule = Schedule.objects.create(template=template, next_run_at=next_run_at, **values)
        audit.record(action="schedule.create", obj=schedule, summary=f"{template.name}: {schedule.cron}")
        return schedule


def schedule_update(*, schedule: Schedule, **changes: Any) -> Schedule:
    """Change fields; a new cron or zone, or enabling, counts the next slot from now (the time a
    schedule spent disabled is not "missed")."""
    unknown = set(changes) - set(SCHEDULE_FIELDS) - {"template"}
    if unknown:
        raise InvalidInput({"body": [f"Unknown field(s): {', '.join(sorted(unknown))}."]})
    template = changes.pop("template", None)
    current = {field: getattr(schedule, field) for field in SCHEDULE_FIELDS}
    values = schedule_validate({**current, **changes})
    timing_changed = any(values[f] != current[f] for f in ("cron", "timezone", "enabled"))
    with transaction.atomic():
        update: dict[str, Any] = {**values, "updated_at": timezone.now()}
        if template is not None:
            update["template"] = template
        if timing_changed or schedule.next_run_at is None:
            update["next_run_at"] = (
                cron.next_run(values["cron"], values["timezone"], timezone.now()) if values["enabled"] else None
            )
        Schedule.objects.filter(pk=schedule.pk).update(**update)
        audit.record(action="schedule.update", obj=schedule, summary=", ".join(sorted(changes)))
    schedule.refresh_from_db()
    return schedule


def schedule_set_enabled(*, schedule: Schedule, enabled: bool) -> Schedule:
    return schedule_update(schedule=schedule, enabled=enabled)


def schedule_delete(*, schedule: Schedule) -> None:
    with transaction.atomic():
        audit.record(action="schedule.delete", obj=schedule, summary=f"{schedule.template.name}: {schedule.cron}")
        Schedule.objects.filter(pk=schedule.pk).delete()


@dataclass(frozen=True)
class Fired:
    """What one claim of a due schedule did: `run` is the batch made (None when skipped)."""

    schedule_id: int
    slot: datetime
    outcome: str
    run: TemplateRun | None = None


def _slots_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Slots in [start, end], at most a few hundred (the window is the missed-run grace)."""
    found: list[datetime] = []
    slot = cron.next_run(schedule.cron, schedule.timezone, start - timedelta(microseconds=1))
    while slot is not None and slot <= end and len(found) < 1000:
        found.append(slot)
        slot = cron.next_run(schedule.cron, schedule.timezone, slot)
    return found


def schedule_fire_due(*, schedule_id: int, now: datetime | None = None) -> Fired | None:
    """Fire a due schedule once, if this caller wins the claim; None when not due or lost.

    The claim is a conditional UPDATE of `next_run_at` from the slot read to the next slot after
    `now`, inside the transaction that creates the batch: of several workers ticking at once exactly
    one sees one row changed, and a crash before commit leaves the slot unclaimed. Slots older than
    BATCHSITE_SCHEDULE_MISSED_AFTER_S (the workers were down) are missed: `skip` drops them, `run_once`
    runs one batch for all of them. A slot within that grace is on time and fires normally.
    """
    now = now or timezone.now()
    grace = timedelta(seconds=settings.BATCHSITE_SCHEDULE_MISSED_AFTER_S)
    with transaction.atomic():
        schedule = Schedule.objects.select_related("template", "template__owner").filter(pk=schedule_id).first()
        if schedule is None or not schedule.enabled or schedule.next_run_at is None or schedule.next_run_at > now:
            return None
        due = schedule.next_run_at
        upcoming = cron.next_run(schedule.cron, schedule.timezone, now)
        claimed = Schedule.objects.filter(pk=schedule.pk, enabled=True, next_run_at=due).update(
            next_run_at=upcoming, last_run_at=now
        )
        if claimed != 1:
            return None
        on_time = _slots_between(schedule, max(due, now - grace), now)
        if on_time:
            slot = on_time[-1]
            missed_note = " (earlier missed slots skipped)" if due < on_time[0] else ""
        elif schedule.missed == Missed.RUN_ONCE:
            slot, missed_note = due, " (once for the missed slots)"
        else:
            return _record(schedule, due, f"Missed slot(s) from {due:%Y-%m-%d %H:%M} UTC skipped.")
        return _fire(schedule, slot, missed_note)


def _record(schedule: Schedule, slot: datetime, outcome: str, run: TemplateRun | None = None) -> Fired:
    Schedule.objects.filter(pk=schedule.pk).update(last_outcome=outcome[:500])
    return Fired(schedule_id=schedule.pk, slot=slot, outcome=outcome, run=run)


def _unfinished_runs(schedule: Schedule):
    return TemplateRun.objects.filter(schedule=schedule).exclude(batch__status__in=TERMINAL_STATUSES)


def _fire(schedule: Schedule, slot: datetime, note: str) -> Fired:
    unfinished = list(_unfinished_runs(schedule).select_related("batch"))
    start = True
    if unfinished and schedule.overlap == Overlap.SKIP:
        return _record(schedule, slot, f"Skipped: run #{unfinished[0].number} is still active.")
    if unfinished and schedule.overlap == Overlap.CANCEL_PREVIOUS:
        for previous in unfinished:
            try:
                services.batch_cancel(
                    batch=previous.batch, reason=f"Cancelled by the next run of schedule {schedule.pk}."
                )
            except IllegalTransition:
                pass  # it finished meanwhile
    if unfinished and schedule.overlap == Overlap.QUEUE:
        start = False
    try:
        with transaction.atomic():
            run = template_run(
                template=schedule.template,
                trigger=RunTrigger.SCHEDULE,
                schedule=schedule,
                slot=slot,
                start=start,
                rate_limit=False,
            )
    except (InvalidInput, IntegrityError) as exc:
        logger.warning("schedule %s: run for %s not created: %s", schedule.pk, slot, exc)
        return _record(schedule, slot, f"Failed: {exc}")
    verb = "Queued" if not start else "Started"
    return _record(schedule, slot, f"{verb} batch {run.batch.name} (run #{run.number}){note}.", run)


def schedule_start_queued() -> int:
    """Start the queued runs (overlap `queue`) whose schedule has no earlier unfinished run.
    Returns how many were started; a run another worker started first is left alone."""
    started = 0
    waiting = (
        TemplateRun.objects.filter(
            trigger=RunTrigger.SCHEDULE, schedule__isnull=False, batch__status=BatchStatus.PENDING
        )
        .select_related("batch")
        .order_by("id")
    )
    for run in waiting:
        if run.schedule_id is None:
            continue
        earlier = (
            TemplateRun.objects.filter(schedule_id=run.schedule_id, id__lt=run.id)
            .exclude(batch__status__in=TERMINAL_STATUSES)
            .exists()
        )
        if earlier:
            continue
        try:
            services.batch_start(batch=run.batch)
        except IllegalTransition:
            continue
        started += 1
    return started
