"""`python manage.py batch <verb>`: create, follow and steer batches from a terminal.

Exit codes scripts can trust: 0 success (for `create --wait`: completed), 1 the batch ended
failed, partially or cancelled, 2 bad usage or an action the batch's status does not allow.
"""

import json
import socket
import sys
import time
from pathlib import Path
from typing import TextIO, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import BooleanField, CharField, FloatField
from django.utils import timezone
from django.utils.module_loading import import_string

from jobs import selectors, services
from jobs.engine import reaper
from jobs.errors import REDIS_ERRORS, IllegalTransition, InvalidInput, OperationNotFound, RateLimited
from jobs.items import Item, ItemsFile, parse_key_values, parse_value, read_items_file
from jobs.management import data_cli, limits_cli
from jobs.management.pipes import QuietPipeCommand
from jobs.models import AfterCondition, Batch, BatchStatus, DatabaseInstance, option_field
from jobs.optypes import all_types, origin_of, plugins
from jobs.optypes.base import find_type
from jobs.secrets import SecretUnreadable, mask_params
from jobs.teams import access
from jobs.teams.models import Team

FAILED = 1
BAD_USAGE = 2
INTERRUPTED = 130
# `create` flags of the batch options (names kept from the first release) and their model fields.
OPTION_FLAGS = {
    "--max-parallel": "max_parallel",
    "--stop-on-error": "stop_on_error",
    "--retries": "max_retries",
    "--retry-backoff": "retry_backoff_s",
    "--timeout": "timeout_s",
    "--priority": "priority",
}
WAIT_POLL_S = 0.25
MAX_PAGE = 1000
BATCH_FIELDS = (
    "id name description type status params max_parallel stop_on_error max_retries retry_backoff_s timeout_s "
    "priority total pending running completed failed skipped percent_complete eta_seconds current_operation "
    "deadline_s deadline_at after_condition created_at started_at finished_at cancel_reason"
).split()
ONE_OPERATION = {
    "cancel": "skip it if pending, stop it if running; the batch goes on.",
    "retry": "run it again if it failed or was skipped; a finished batch reopens.",
}
OPERATION_FIELDS = "seq label status attempts error_type error duration_ms started_at finished_at".split()


TYPE_PARAM_DEST = "type_param:"


def _add_type_param_flags(create) -> None:
    """`--duration-ms 50` for each param of the registered types (a type's form, derived or
    hand-written, names them); a name an option already uses is left to --param."""
    owners: dict[str, list[str]] = {}
    helps: dict[str, str] = {}
    for optype in all_types():
        for name, field in optype.form.base_fields.items():
            owners.setdefault(name, []).append(optype.key)
            helps.setdefault(name, f"{field.label or name}. {field.help_text}".strip())
    for name, keys in sorted(owners.items()):
        flag = "--" + name.replace("_", "-")
        if flag in create._option_string_actions:
            continue
        create.add_argument(
            flag,
            dest=TYPE_PARAM_DEST + name,
            metavar="VALUE",
            default=None,
            # argparse %-formats help texts.
            help=f"Param of {', '.join(keys)}: {helps[name]} (as --param {name}=VALUE).".replace("%", "%%"),
        )


def _type_params(options: dict) -> dict:
    return {
        key.removeprefix(TYPE_PARAM_DEST): parse_value(value)
        for key, value in options.items()
        if key.startswith(TYPE_PARAM_DEST) and value is not None
    }


class Command(QuietPipeCommand):
    help = "Create, list, inspect and control batches of operations."

    def add_arguments(self, parser: CommandParser) -> None:
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

        create = verbs.add_parser("create", help="Create a batch and start it.")
        create.add_argument("--type", required=True, help=f"Operation type ({', '.join(t.key for t in all_types())}).")
        create.add_argument("--name", default="", help="Batch name (default: type and time).")
        create.add_argument("--description", default="")
        create.add_argument(
            "--items",
            type=Path,
            help="Items file: .jsonl, .csv or .xlsx with a label column (other columns: item params), or a JSON array.",
        )
        create.add_argument("--item", action="append", default=[], help="One item label (repeatable).")
        create.add_argument("--param", action="append", default=[], help="Base parameter key=value (repeatable).")
        create.add_argument(
            "--select",
            metavar="JSON",
            help='Instead of items, for types whose items are instance names: {"tags": ["prod"], "region": "eu"}.',
        )
        create.add_argument(
            "--select-tag", action="append", default=[], help="Select instances with this tag (repeatable)."
        )
        create.add_argument("--select-region", default="", help="Select instances in this region.")
        for flag, field in OPTION_FLAGS.items():
            model_field = option_field(field)
            if isinstance(model_field, BooleanField):
                create.add_argument(flag, dest=field, action="store_const", const=True, help=str(model_field.help_text))
            else:
                kind = {FloatField: float, CharField: str}.get(type(model_field), int)
                help_text = f"{model_field.help_text} Default: {model_field.default}."
                create.add_argument(flag, dest=field, type=kind, help=help_text)
        create.add_argument(
            "--webhook", default="", metavar="URL", help="POST a signed notification here when the batch ends."
        )
        create.add_argument(
            "--deadline", type=int, metavar="S", help="Expire the batch S seconds after it starts (S > 0)."
        )
        create.add_argument(
            "--limit-key",
            action="append",
            default=[],
            metavar="KEY",
            help="A named limit every operation counts against (repeatable; see `batch limits list`).",
        )
        create.add_argument("--after", metavar="ID", help="Wait for this batch (id or short id) before starting.")
        create.add_argument(
            "--after-condition",
            choices=AfterCondition.values,
            default=AfterCondition.COMPLETED,
            help="With --after: start when it ends completed (default), finished (any end) or failed.",
        )
        create.add_argument("--user", help="Owner username (default: the first superuser).")
        create.add_argument(
            "--team", metavar="SLUG", help="The team (slug or id) it belongs to; --user must be its operator or admin."
        )
        create.add_argument("--wait", action="store_true", help="Draw a live progress bar until the batch ends.")
        _add_type_param_flags(create)

        add = verbs.add_parser("add", help="Add operations to a batch (pending, waiting, queued, running, paused).")
        add.add_argument("batch", help="Batch id or short id.")
        add.add_argument(
            "--items",
            type=Path,
            help="Items file: .jsonl, .csv or .xlsx with a label column (other columns: item params), or a JSON array.",
        )
        add.add_argument("--item", action="append", default=[], help="One item label (repeatable).")
        add.add_argument("--reopen", action="store_true", help="A finished batch runs again with the new operations.")

        chain = verbs.add_parser("chain", help="Create batches that run one after another, from a JSON file.")
        chain.add_argument(
            "file",
            type=Path,
            help='JSON: {"batches": [<POST /api/batches body>, ...], "condition": "completed"} (or just the list).',
        )
        chain.add_argument("--user", help="Owner username (default: the first superuser).")
        chain.add_argument("--team", metavar="SLUG", help="The team every batch of the chain belongs to.")

        listing = verbs.add_parser("list", help="List batches, newest first.")
        listing.add_argument("--status", choices=BatchStatus.values)
        listing.add_argument("--type")
        listing.add_argument("--user", help="Only this owner's batches.")
        listing.add_argument("--team", metavar="SLUG", help="Only this team's batches.")
        listing.add_argument("--limit", type=int, default=20, help=f"Batches per page, 1 to {MAX_PAGE} (default 20).")
        listing.add_argument("--offset", type=int, default=0, help="Batches to skip (paging).")
        listing.add_argument("--json", action="store_true", help="Print JSON: {items, count, limit, offset}.")

        bulk = verbs.add_parser(
            "bulk", help="One action on many batches: by id, or every batch matching filters (at most 1000)."
        )
        bulk.add_argument("action", choices=list(services.BULK_ACTIONS))
        bulk.add_argument("--ids", nargs="+", default=[], metavar="ID", help="Batch ids or short ids.")
        bulk.add_argument("--status", choices=BatchStatus.values, help="Every batch with this status.")
        bulk.add_argument("--type", help="... of this operation type.")
        bulk.add_argument("--q", help="... with this text in the name or description.")
        bulk.add_argument("--created-after", help="... created from this ISO 8601 date or date-time.")
        bulk.add_argument("--created-before", help="... created until this ISO 8601 date or date-time.")
        bulk.add_argument("--user", help="Only this owner's batches.")
        bulk.add_argument("--json", action="store_true", help='Print JSON: {"changed", "skipped": [{"id", "reason"}]}.')

        show = verbs.add_parser("show", help="Show a batch: counters, timeline, failures.")
        show.add_argument("batch", help="Batch id or short id.")
        show.add_argument(
            "--limit", type=int, default=10, help=f"Failed operations per page, 1 to {MAX_PAGE} (default 10)."
        )
        show.add_argument("--offset", type=int, default=0, help="Failed operations to skip (paging).")
        show.add_argument("--json", action="store_true", help="Print the batch, its timeline and failures as JSON.")

        for verb, text in (
            ("cancel", "Cancel a batch: skip pending operations and stop running ones."),
            ("pause", "Pause a batch: running operations finish, nothing new starts."),
            ("resume", "Resume a paused batch."),
            ("retry", "Retry the failed operations of a batch."),
            ("delete", "Delete a batch that is not running."),
        ):
            sub = verbs.add_parser(verb, help=text)
            sub.add_argument("batch", help="Batch id or short id.")
            if verb == "cancel":
                sub.add_argument("--reason", default="")
                sub.add_argument(
                    "--drain",
                    action="store_true",
                    help="Let running operations finish (status cancelling until they have), start nothing new.",
                )
            if verb in ("cancel", "retry"):
                sub.add_argument(
                    "--op",
                    type=int,
                    metavar="SEQ",
                    help=f"Only this operation (its # in the batch): {ONE_OPERATION[verb]}",
                )

        prune = verbs.add_parser("prune", help="Delete finished batches older than N days, every user's.")
        prune.add_argument("--days", type=int, required=True)
        prune.add_argument("--dry-run", action="store_true", help="Only say what would be deleted.")
        prune.add_argument("--yes", action="store_true", help="Do not ask for confirmation on a terminal.")

        verbs.add_parser("stats", help="Totals by status and type.")
        types = verbs.add_parser("types", help="Registered operation types, where each comes from, failed plugins.")
        types.add_argument("--json", action="store_true", help="Print a JSON object: types and plugin failures.")
        verbs.add_parser("reap", help="Recover lost operations and restart lanes of stuck batches, once.")
        workers = verbs.add_parser(
            "workers", help="Live workers, queue depths, batches waiting for a worker, recent throughput."
        )
        workers.add_argument("--json", action="store_true", help="Print what GET /api/workers answers.")
        workers.add_argument(
            "--here",
            action="store_true",
            help="Only this host's workers; exit 1 if none is live (a container's health check).",
        )

        instance = verbs.add_parser("instance", help="Register, list, test and remove database instances.")
        instance_verbs = instance.add_subparsers(dest="instance_verb", required=True, metavar="ACTION")
        add = instance_verbs.add_parser("add", help="Register a database instance.")
        add.add_argument("name", help="Instance name (letters, digits, - and _); items refer to it.")
        add.add_argument("url", help="SQLAlchemy URL, e.g. postgresql://user:password@host:5432/db.")
        add.add_argument("--region", default="")
        add.add_argument("--tag", action="append", default=[], help="A tag (repeatable).")
        add.add_argument("--max-connections", type=int, help="Operations running against it at once, all batches.")
        add.add_argument("--owner", help="Owner username (default: none, shared with everyone).")
        add.add_argument("--shared", action="store_true", help="With --owner: shared with everyone anyway.")
        add.add_argument("--team", metavar="SLUG", help="The team it belongs to (with --owner: one of its admins).")
        limit = instance_verbs.add_parser("limit", help="Set (or with 0, remove) an instance's max_connections.")
        limit.add_argument("name")
        limit.add_argument("max_connections", type=int)
        imports = instance_verbs.add_parser(
            "import", help="Register the instances of a CSV (name,url,region,tags) or JSON file: all or none."
        )
        imports.add_argument("file", type=Path)
        imports.add_argument("--owner", help="Owner username (default: none, shared with everyone).")
        imports.add_argument("--team", metavar="SLUG", help="The team they belong to.")
        instance_verbs.add_parser("list", help="List registered instances (passwords masked).")
        test = instance_verbs.add_parser(
            "test", help="Connect and run SELECT 1, several instances at once (exit 1 if one fails)."
        )
        test.add_argument("name", nargs="*", help="Instance names (default with --all: every one).")
        test.add_argument("--all", action="store_true", help="Test every registered instance.")
        secrets_verb = verbs.add_parser("secrets", help="Secrets at rest (instance URLs, secret params).")
        secrets_verbs = secrets_verb.add_subparsers(dest="secrets_verb", required=True, metavar="ACTION")
        secrets_verbs.add_parser(
            "rotate", help="Encrypt every stored secret again with the first key of BATCHSITE_ENCRYPTION_KEY."
        )
        remove = instance_verbs.add_parser("remove", help="Forget a registered instance.")
        remove.add_argument("name")

        # Verbs of feature apps, named by dotted path so this command imports none of them: each is
        # called with the subparsers and adds its verbs with set_defaults(handler=fn(command, options)).
        limits_cli.add_verbs(verbs)
        data_cli.add_verbs(verbs)
        for path in settings.BATCHSITE_COMMAND_VERBS:
            import_string(path)(verbs)

    def handle(self, *args, **options) -> None:
        self._items_file: tuple[ItemsFile, int] | None = None
        try:
            handler = options.get("handler")
            if handler is not None:
                handler(self, options)
            else:
                getattr(self, f"handle_{options['verb']}")(options)
        except InvalidInput as exc:
            if self._items_file is not None:
                exc = self._items_file[0].explain(exc, "items", offset=self._items_file[1])
            raise CommandError(str(exc), returncode=BAD_USAGE) from None
        except (IllegalTransition, RateLimited) as exc:
            raise CommandError(str(exc), returncode=BAD_USAGE) from None
        except (Batch.DoesNotExist, Batch.MultipleObjectsReturned) as exc:
            raise CommandError(str(exc), returncode=BAD_USAGE) from None
        except OperationNotFound:
            raise CommandError(
                f"Batch {options.get('batch')} has no operation #{options.get('op')}.", returncode=BAD_USAGE
            ) from None
        except SecretUnreadable as exc:
            raise CommandError(str(exc), returncode=FAILED) from None
        except PermissionDenied as exc:
            # A role too low for what was asked (a viewer creating a team's batch): bad usage, said why.
            raise CommandError(str(exc), returncode=BAD_USAGE) from None
        except DatabaseInstance.DoesNotExist:
            raise CommandError(f"No database instance named {options.get('name')!r}.", returncode=BAD_USAGE) from None

    # --- verbs ---

    def _items(self, options, *, required: bool = True) -> list[Item]:
        items: list[Item] = [Item(label=label) for label in options["item"]]
        if options["items"]:
            found = read_items_file(self._read_bytes(options["items"], "items file"), options["items"].name)
            # Kept so that the service's errors about these items can name the file's rows.
            self._items_file = (found, len(items))
            items += found.items
        if not items and required:
            raise CommandError("Give items with --items FILE or --item LABEL.", returncode=BAD_USAGE)
        return items

    def _read_bytes(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {what}: {exc}", returncode=BAD_USAGE) from None

    def _read(self, path: Path, what: str) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {what}: {exc}", returncode=BAD_USAGE) from None
        except UnicodeDecodeError:
            raise CommandError(f"Cannot read {what} {path}: it is not UTF-8 text.", returncode=BAD_USAGE) from None

    def handle_create(self, options) -> None:
        owner = self._owner(options["user"])
        items = self._items(options, required=False)
        select = self._select(options)
        if not items and select is None:
            raise CommandError(
                "Give items with --items FILE or --item LABEL (or instances with --select).", returncode=BAD_USAGE
            )
        after = selectors.batch_find(options["after"]).pk if options["after"] else None
        batch = services.batch_create(
            select=select,
            owner=owner,
            type=options["type"],
            name=options["name"] or f"{options['type']} {timezone.localtime():%Y-%m-%d %H:%M %Z}",
            description=options["description"],
            items=items,
            params={**parse_key_values(options["param"]), **_type_params(options)},
            # Options not given take the model's defaults in the service.
            **{field: options[field] for field in OPTION_FLAGS.values() if options[field] is not None},
            webhook_url=options["webhook"],
            deadline_s=options["deadline"],
            limit_keys=options["limit_key"],
            after=after,
            after_condition=options["after_condition"],
            team=options["team"],
        )
        try:
            self.stdout.write(f"Created batch {batch.id} ({batch.total} operations of {batch.type}).")
            if batch.status == BatchStatus.WAITING:
                self.stdout.write(f"Waiting for batch {options['after']} to end {batch.after_condition}.")
            elif batch.status == BatchStatus.CANCELLED:
                self.stdout.write(batch.cancel_reason)
            if not options["wait"]:
                return
            batch = self._wait(batch)
        except KeyboardInterrupt:
            # Ctrl-C stops the following, not the batch: say so, and exit as an interrupted command does.
            self.stderr.write(f"stopped following; batch {batch.id} keeps running (batch show {batch.short_id})")
            raise SystemExit(INTERRUPTED) from None
        self.stdout.write(self._summary(batch))
        if batch.status != BatchStatus.COMPLETED:
            raise SystemExit(1)

    def handle_list(self, options) -> None:
        limit, offset = self._page(options)
        batches = Batch.objects.select_related("owner")
        if options["status"]:
            batches = batches.filter(status=options["status"])
        if options["type"]:
            batches = batches.filter(type=options["type"])
        if options["user"]:
            batches = batches.filter(owner=self._owner(options["user"]))
        if options["team"]:
            batches = batches.filter(team=self._team(options["team"]))
        total = batches.count()
        rows = list(batches[offset : offset + limit])
        if options["json"]:
            page = {"items": [_batch_json(b) for b in rows], "count": total, "limit": limit, "offset": offset}
            self.stdout.write(json.dumps(page, cls=DjangoJSONEncoder, indent=2))
            return
        self.stdout.write(
            f"{'ID':8}  {'STATUS':15}  {'PROGRESS':>8}  {'DONE/TOTAL':>13}  {'TYPE':14}  {'OWNER':10}  NAME"
        )
        for batch in rows:
            self.stdout.write(
                f"{batch.short_id:8}  {batch.status:15}  {batch.percent_complete:>7}%  "
                f"{batch.finished_count:>6}/{batch.total:<6}  {batch.type[:14]:14}  {batch.owner.username[:10]:10}  {batch.name}"
            )
        self.stdout.write(_page_footer("batch(es)", len(rows), total, offset))

    def handle_bulk(self, options) -> None:
        """Exit 0 when every batch took the action, 1 when some were skipped (each is printed)."""
        filters = {name: options[name] for name in ("status", "type", "q", "created_after", "created_before")}
        if bool(options["ids"]) == any(value is not None for value in filters.values()):
            raise CommandError(
                "Give --ids, or filters (--status, --type, --q, --created-after/-before).", returncode=BAD_USAGE
            )
        visible = Batch.objects.all()
        if options["user"]:
            visible = visible.filter(owner=self._owner(options["user"]))
        if options["ids"]:
            ids = [self._bulk_id(reference) for reference in options["ids"]]
        else:
            text = filters.pop("q")
            ids = services.batches_matching(selectors.batch_search(None, text=text, **filters).filter(pk__in=visible))
        outcome = services.batches_bulk_action(action=options["action"], ids=ids, visible=visible)
        if options["json"]:
            self.stdout.write(json.dumps(outcome, indent=2))
        else:
            for entry in outcome["skipped"]:
                self.stdout.write(f"skipped {entry['id']}: {entry['reason']}")
            self.stdout.write(
                f"{options['action']}: {outcome['changed']} batch(es) changed, {len(outcome['skipped'])} skipped."
            )
        if outcome["skipped"]:
            raise SystemExit(FAILED)

    def _bulk_id(self, reference: str) -> str:
        """A full id for a short one when it names one batch; else as given (then skipped as not found)."""
        try:
            return str(selectors.batch_find(reference).pk)
        except (Batch.DoesNotExist, Batch.MultipleObjectsReturned):
            return reference

    def handle_show(self, options) -> None:
        limit, offset = self._page(options)
        batch = selectors.batch_find(options["batch"])
        failed = batch.operations.filter(status="failed")
        failed_count = failed.count()
        failures = list(failed[offset : offset + limit])
        events = list(batch.events.select_related("actor")[:50])
        if options["json"]:
            data = _batch_json(batch)
            data["events"] = [
                {
                    "kind": e.kind,
                    "message": e.message,
                    "created_at": e.created_at,
                    "actor": e.actor and e.actor.username,
                }
                for e in events
            ]
            data["failed_operations"] = {
                "items": [{name: getattr(o, name) for name in OPERATION_FIELDS} for o in failures],
                "count": failed_count,
                "limit": limit,
                "offset": offset,
            }
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
            return
        self.stdout.write(f"Batch {batch.id}: {batch.name}")
        self.stdout.write(f"  type {batch.type}, owner {batch.owner.username}, priority {batch.priority}")
        self.stdout.write(
            f"  status {batch.status}, {batch.percent_complete}% — total {batch.total}, pending {batch.pending}, "
            f"running {batch.running}, completed {batch.completed}, failed {batch.failed}, skipped {batch.skipped}"
        )
        self.stdout.write(
            f"  options: max_parallel {batch.max_parallel}, stop_on_error {batch.stop_on_error}, "
            f"retries {batch.max_retries} (backoff {batch.retry_backoff_s} s), timeout {batch.timeout_s} s"
        )
        if batch.after_id:
            after = Batch.objects.filter(pk=batch.after_id).first()
            name = f"{after.name} ({after.short_id}, {after.status})" if after else batch.after_id
            self.stdout.write(f"  after {name}, when it ends {batch.after_condition}")
        if batch.deadline_s:
            left = batch.deadline_left_s
            remaining = f", {left:.0f} s left" if left is not None else ""
            self.stdout.write(f"  deadline {batch.deadline_s} s from its start{remaining}")
        if batch.eta_seconds is not None:
            self.stdout.write(f"  ETA {batch.eta_seconds:.0f} s, current operation {batch.current_operation or '-'}")
        self.stdout.write("  timeline:")
        for event in events:
            self.stdout.write(
                f"    {timezone.localtime(event.created_at):%Y-%m-%d %H:%M:%S}  {event.kind:10} {event.message}"
            )
        if failures:
            self.stdout.write(f"  failed operations ({offset + 1}-{offset + len(failures)} of {failed_count}):")
            for operation in failures:
                self.stdout.write(f"    #{operation.seq} {operation.label}: {operation.error_type}: {operation.error}")
            if offset + len(failures) < failed_count:
                self.stdout.write(f"  more: --offset {offset + len(failures)}")
        elif failed_count:
            self.stdout.write(f"  no failed operations past {offset} (of {failed_count}).")

    def handle_cancel(self, options) -> None:
        if options.get("op") is not None:
            if options["drain"]:
                raise CommandError(
                    "--drain applies to a whole batch, not to one operation (--op).", returncode=BAD_USAGE
                )
            return self._one_operation(options, services.operation_cancel, "cancelled")
        mode = "drain" if options["drain"] else "now"
        batch = services.batch_cancel(batch=selectors.batch_find(options["batch"]), reason=options["reason"], mode=mode)
        if batch.status == BatchStatus.CANCELLING:
            self.stdout.write(
                f"Cancelling batch {batch.short_id}: {batch.skipped} operations skipped, "
                f"{batch.running} running operation(s) will finish."
            )
            return
        self.stdout.write(f"Cancelled batch {batch.short_id}: {batch.skipped} operations skipped.")

    def handle_add(self, options) -> None:
        items = self._items(options)
        batch = selectors.batch_find(options["batch"])
        batch = services.batch_add_operations(batch_id=batch.pk, items=items, reopen=options["reopen"])
        self.stdout.write(
            f"Added {len(items)} operation(s) to batch {batch.short_id}: {batch.total} in all, {batch.status}."
        )

    def handle_chain(self, options) -> None:
        owner = self._owner(options["user"])
        try:
            spec = json.loads(self._read(options["file"], "chain file"))
        except json.JSONDecodeError as exc:
            raise CommandError(f"The chain file is not JSON: {exc}", returncode=BAD_USAGE) from None
        if isinstance(spec, list):
            spec = {"batches": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("batches"), list):
            raise CommandError('The chain file holds {"batches": [...]} or a list of batch bodies.', returncode=2)
        bodies = spec["batches"]
        if not all(isinstance(body, dict) for body in bodies):
            raise CommandError("Each batch of the chain is a JSON object (a POST /api/batches body).", returncode=2)
        if options["team"]:
            bodies = [{"team": options["team"], **body} for body in bodies]
        created = services.chain_create(
            owner=owner, bodies=bodies, condition=spec.get("condition") or AfterCondition.COMPLETED
        )
        for batch in created:
            self.stdout.write(f"{batch.id}  {batch.status:10}  {batch.name}")
        self.stdout.write(f"Created a chain of {len(created)} batches.")

    def handle_pause(self, options) -> None:
        batch = services.batch_pause(batch=selectors.batch_find(options["batch"]))
        self.stdout.write(f"Paused batch {batch.short_id}; {batch.running} running operation(s) will finish.")

    def handle_resume(self, options) -> None:
        batch = services.batch_resume(batch=selectors.batch_find(options["batch"]))
        self.stdout.write(f"Resumed batch {batch.short_id}; {batch.pending} operation(s) pending.")

    def handle_retry(self, options) -> None:
        if options.get("op") is not None:
            return self._one_operation(options, services.operation_retry, "back in the queue")
        batch = selectors.batch_find(options["batch"])
        count = services.batch_retry_failed(batch=batch)
        self.stdout.write(f"Retrying {count} failed operation(s) of batch {batch.short_id}.")

    def _one_operation(self, options, action, done: str) -> None:
        batch = selectors.batch_find(options["batch"])
        operation = action(batch=batch, seq=options["op"])
        batch.refresh_from_db()
        self.stdout.write(
            f"Operation #{operation.seq} {operation.label} of batch {batch.short_id} {done}; "
            f"the batch is {batch.get_status_display().lower()}."
        )

    def handle_delete(self, options) -> None:
        batch = selectors.batch_find(options["batch"])
        services.batch_delete(batch=batch)
        self.stdout.write(f"Deleted batch {batch.short_id} ({batch.name}).")

    def handle_prune(self, options) -> None:
        days = options["days"]
        if days < 0:
            raise CommandError("--days must be zero or more.", returncode=BAD_USAGE)
        by_owner = selectors.batches_to_prune_by_owner(days=days)
        total = sum(by_owner.values())
        if not total:
            self.stdout.write(f"Pruned 0 finished batch(es) older than {days} day(s).")
            return
        self.stdout.write(f"Finished batches older than {days} day(s), by owner:")
        for owner, count in by_owner.items():
            self.stdout.write(f"  {owner:20} {count}")
        if options["dry_run"]:
            self.stdout.write(f"Dry run: would prune {total} finished batch(es); nothing deleted.")
            return
        if not options["yes"] and sys.stdin.isatty():
            self.stdout.flush()
            answer = input(f"Delete these {total} batch(es)? Type 'yes' to confirm: ")
            if answer.strip().lower() != "yes":
                raise CommandError("Nothing deleted.", returncode=FAILED)
        count = services.batch_prune(days=days)
        self.stdout.write(f"Pruned {count} finished batch(es) older than {days} day(s).")

    def handle_stats(self, options) -> None:
        stats = selectors.batch_stats()
        self.stdout.write(f"{stats['total']} batch(es)")
        for status, count in sorted(stats["by_status"].items()):
            self.stdout.write(f"  {status:16} {count}")
        for type_key, count in sorted(stats["by_type"].items()):
            self.stdout.write(f"  type {type_key:11} {count}")
        rate = stats["completion_rate"]
        self.stdout.write(f"Completion rate of finished batches: {'-' if rate is None else f'{rate:.1%}'}")

    def handle_types(self, options) -> None:
        listed = [{"key": t.key, "label": t.label, "origin": origin_of(t.key)} for t in all_types()]
        failed = [{"origin": failure.origin, "error": failure.error} for failure in plugins.failures]
        if options["json"]:
            self.stdout.write(json.dumps({"types": listed, "plugin_failures": failed}, indent=2))
            return
        width = max((len(t["key"]) for t in listed), default=0)
        for row in listed:
            self.stdout.write(f"{row['key']:{width}}  {row['label']}  [{row['origin']}]")
        for failure in failed:
            self.stdout.write(f"Failed to load: {failure['origin']}: {failure['error']}")
        self.stdout.write(f"{len(listed)} type(s), {len(failed)} plugin(s) failed to load.")

    def handle_reap(self, options) -> None:
        self.stdout.write(f"Reaped: {reaper.reap()}.")

    def handle_workers(self, options) -> None:
        try:
            overview = selectors.workers_overview()
        except REDIS_ERRORS:
            raise CommandError(
                "Redis does not answer: the worker registry is unavailable.", returncode=FAILED
            ) from None
        if options["here"]:
            host = socket.gethostname()
            overview["workers"] = [w for w in overview["workers"] if w["host"] == host]
        if options["json"]:
            self.stdout.write(json.dumps(overview, cls=DjangoJSONEncoder, indent=2))
        else:
            for worker in overview["workers"]:
                serving = ", ".join(batch["name"] for batch in worker["batches"]) or "-"
                self.stdout.write(
                    f"{worker['host']:20} pid {worker['pid']:<7} {worker['state']:8} "
                    f"{worker['running']}/{worker['concurrency']} slots  cpu {worker['cpu_percent']:.0f} %  "
                    f"rss {worker['rss_bytes'] / 2**20:.0f} MB  heartbeat {worker['heartbeat_age_s']:.0f} s ago  "
                    f"queues {','.join(worker['queues'])}  serving {serving}"
                )
            queues = ", ".join(f"{q['name']} {q['waiting']}" for q in overview["queues"])
            points = overview["throughput"]["points"]
            latest = points[-1]["per_second"] if points else 0
            self.stdout.write(
                f"{len(overview['workers'])} live worker(s), {overview['running']}/{overview['capacity']} slots in use; "
                f"lanes waiting: {queues}; {len(overview['waiting_batches'])} batch(es) waiting for a worker; "
                f"{latest:g} operations/s"
            )
        if options["here"] and not overview["workers"]:
            raise CommandError(f"No live worker on {socket.gethostname()}.", returncode=FAILED)

    def handle_instance(self, options) -> None:
        getattr(self, f"handle_instance_{options['instance_verb']}")(options)

    def handle_instance_add(self, options) -> None:
        owner = self._owner(options["owner"]) if options["owner"] else None
        instance = services.instance_create(
            name=options["name"],
            url=options["url"],
            region=options["region"],
            tags=options["tag"],
            max_connections=options["max_connections"],
            owner=owner,
            shared=True if options["shared"] or (owner is None and not options["team"]) else False,
            team=options["team"],
        )
        self.stdout.write(f"Registered instance {instance.name} ({instance.masked_url}).")
        self._warn_role(instance)

    def handle_instance_limit(self, options) -> None:
        instance = DatabaseInstance.objects.get(name=options["name"])
        value = options["max_connections"] or None
        services.instance_update(instance=instance, max_connections=value)
        self.stdout.write(f"Instance {instance.name}: " + (f"max_connections {value}." if value else "no limit."))

    def handle_instance_import(self, options) -> None:
        owner = self._owner(options["owner"]) if options["owner"] else None
        try:
            content = options["file"].read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {options['file']}: {exc}", returncode=BAD_USAGE) from None
        rows = services.parse_instances_file(content, options["file"].name)
        created = services.instances_import(rows=rows, owner=owner, team=options["team"])
        self.stdout.write(f"Imported {len(created)} instance(s): {', '.join(i.name for i in created)}.")

    def handle_instance_list(self, options) -> None:
        rows = list(DatabaseInstance.objects.all())
        self.stdout.write(f"{'NAME':20}  {'ENGINE':10}  {'REGION':12}  {'TAGS':20}  {'MAX':>4}  {'LAST TEST':10}  URL")
        for instance in rows:
            tags = ",".join(instance.tags)
            limit = str(instance.max_connections or "-")
            tested = "-" if instance.last_test_ok is None else ("ok" if instance.last_test_ok else "failed")
            self.stdout.write(
                f"{instance.name:20}  {instance.engine[:10]:10}  {instance.region[:12]:12}  {tags[:20]:20}  "
                f"{limit:>4}  {tested:10}  {instance.masked_url}"
            )
        self.stdout.write(f"{len(rows)} instance(s).")

    def handle_instance_test(self, options) -> None:
        if options["all"]:
            instances = list(DatabaseInstance.objects.all())
        elif options["name"]:
            instances = []
            for name in options["name"]:
                instance = DatabaseInstance.objects.filter(name=name).first()
                if instance is None:
                    raise CommandError(f"No database instance named {name!r}.", returncode=BAD_USAGE)
                instances.append(instance)
        else:
            raise CommandError("Name instances to test, or give --all.", returncode=BAD_USAGE)
        checks = services.instances_test_connections(instances=instances)
        failed = []
        for name, check in checks.items():
            if check.ok:
                self.stdout.write(f"Instance {name}: {check.message}.")
                for warning in check.warnings:
                    self.stdout.write(f"  warning: {warning}")
            else:
                failed.append(f"Instance {name}: connection failed: {check.message}")
        if failed:
            raise CommandError("\n".join(failed), returncode=FAILED)

    def handle_secrets(self, options) -> None:
        counts = services.secrets_rotate()
        self.stdout.write(
            f"Encrypted again with the first key: {counts['instances']} instance URL(s), "
            f"{counts['batches']} batch(es) and {counts['operations']} operation(s) with secret params."
        )

    def _warn_role(self, instance: DatabaseInstance) -> None:
        """Registration is where a person can still choose another role: say what this one may do."""
        check = services.instance_test_connection(instance=instance)
        if not check.ok:
            self.stdout.write(f"  note: the connection test failed for now: {check.message}")
        for warning in check.warnings:
            self.stdout.write(f"  warning: {warning}")

    def _select(self, options) -> dict | None:
        select = None
        if options["select"]:
            try:
                select = json.loads(options["select"])
            except ValueError as exc:
                raise CommandError(f"--select is not JSON: {exc}", returncode=BAD_USAGE) from None
        if options["select_tag"] or options["select_region"]:
            select = dict(select) if isinstance(select, dict) else {}
            if options["select_tag"]:
                select["tags"] = [*select.get("tags", []), *options["select_tag"]]
            if options["select_region"]:
                select["region"] = options["select_region"]
        return select

    def handle_instance_remove(self, options) -> None:
        services.instance_remove(name=options["name"])
        self.stdout.write(f"Removed instance {options['name']}.")

    # --- helpers ---

    def _page(self, options) -> tuple[int, int]:
        limit, offset = options["limit"], options["offset"]
        if not 1 <= limit <= MAX_PAGE:
            raise CommandError(f"--limit must be from 1 to {MAX_PAGE}, got {limit}.", returncode=BAD_USAGE)
        if offset < 0:
            raise CommandError(f"--offset must be zero or more, got {offset}.", returncode=BAD_USAGE)
        return limit, offset

    def _owner(self, username: str | None):
        users = get_user_model().objects
        if username:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(f"No user {username!r}.", returncode=BAD_USAGE)
            return user
        user = users.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError("No superuser to own the batch: pass --user NAME.", returncode=BAD_USAGE)
        return user

    def _team(self, reference: str) -> Team:
        team = Team.objects.filter(slug=reference).first()
        if team is None and reference.isascii() and reference.isdigit():
            team = Team.objects.filter(pk=int(reference)).first()
        if team is None:
            raise CommandError(f"No team {reference!r}.", returncode=BAD_USAGE)
        return team

    def _wait(self, batch: Batch) -> Batch:
        """Redraw a progress bar from the database until the batch reaches a terminal status."""
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import Progress

        from jobs.management.progress import progress_columns

        console = Console(file=cast(TextIO, self.stdout._out), force_terminal=None)
        columns = progress_columns(console.width)
        with Progress(*columns, console=console, transient=False, expand=False) as progress:
            task = progress.add_task(escape(batch.name[:30]), total=batch.total, counts="", eta="")
            while True:
                batch.refresh_from_db()
                progress.update(
                    task,
                    completed=batch.finished_count,
                    description=escape(f"[{batch.status}] {batch.name[:30]}"),
                    counts=f"✓{batch.completed} ✗{batch.failed} ⤼{batch.skipped} ▶{batch.running}",
                    eta=f"ETA {batch.eta_seconds:.0f}s" if batch.eta_seconds is not None else "",
                )
                if batch.is_terminal:
                    return batch
                time.sleep(WAIT_POLL_S)

    def _summary(self, batch: Batch) -> str:
        elapsed = batch.elapsed.total_seconds() if batch.elapsed else 0.0
        return (
            f"Batch {batch.short_id} {batch.status}: {batch.completed} completed, {batch.failed} failed, "
            f"{batch.skipped} skipped of {batch.total} in {elapsed:.1f} s."
        )


def _batch_json(batch: Batch) -> dict:
    """A batch as the API shows it (GET /api/batches/{id})."""
    data = {name: getattr(batch, name) for name in BATCH_FIELDS}
    data["owner"] = batch.owner.get_username()
    data["team"] = access.team_slug(batch)
    data["after"] = batch.after_id
    data["params"] = mask_params(find_type(batch.type), batch.params)
    return data


def _page_footer(noun: str, shown: int, total: int, offset: int) -> str:
    if offset == 0 and shown == total:
        return f"{total} {noun}."
    if not shown:
        return f"None past {offset} of {total} {noun}."
    more = f"; --offset {offset + shown} for more" if offset + shown < total else ""
    return f"Showing {offset + 1}-{offset + shown} of {total} {noun}{more}."
