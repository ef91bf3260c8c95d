"""`manage.py batch search` and `batch export`: search across batches and take a batch's results
or operations out as CSV, JSONL or Excel, as the pages and the API do.

Exit codes as the core's: 0 success, 1 nothing found, 2 bad usage (an unknown batch or format).
"""

import json
import sys
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from jobs import selectors
from jobs.api import exports
from jobs.errors import InvalidInput
from jobs.models import Batch

BAD_USAGE = 2
EXPORTS = {
    ("results", "csv"): exports.results_csv_response,
    ("results", "jsonl"): exports.results_jsonl_response,
    ("results", "xlsx"): exports.results_xlsx_response,
    ("operations", "csv"): exports.operations_csv_response,
    ("operations", "xlsx"): exports.operations_xlsx_response,
}


def add_verbs(verbs) -> None:
    search = verbs.add_parser("search", help="Batch names, operation labels and errors across batches.")
    search.add_argument("query", help="2 to 200 characters, case-insensitive.")
    search.add_argument("--user", help="Search as this user (what they may see); default: everything.")
    search.add_argument("--limit", type=int, default=20, help="At most this many of each (default 20).")
    search.add_argument("--json", action="store_true", help="Print what GET /api/search answers.")
    search.set_defaults(handler=search_batches)

    export = verbs.add_parser("export", help="A batch's results or operations as CSV, JSONL or .xlsx.")
    export.add_argument("batch", help="Its id or short id.")
    export.add_argument("--what", choices=("results", "operations"), default="results")
    export.add_argument("--format", choices=("csv", "jsonl", "xlsx"), default="csv")
    export.add_argument("--output", "-o", default="-", help="A file (default: standard output; not for .xlsx).")
    export.set_defaults(handler=export_batch)


def _sentence(exc: InvalidInput) -> str:
    return " ".join(m for messages in exc.errors.values() for m in messages)


def _user(username: str | None):
    if not username:
        return None
    found = get_user_model().objects.filter(username=username).first()
    if found is None:
        raise CommandError(f"No user {username!r}.", returncode=BAD_USAGE)
    return found


def search_batches(command, options) -> None:
    try:
        found = selectors.search(_user(options["user"]), options["query"], limit=max(1, options["limit"]))
    except InvalidInput as exc:
        raise CommandError(_sentence(exc), returncode=BAD_USAGE) from None
    if options["json"]:
        command.stdout.write(json.dumps(found, indent=2, default=str))
    else:
        for batch in found["batches"]:
            command.stdout.write(f"batch      {batch['id'][:8]}  {batch['status']:16} {batch['name']}")
        for row in found["operations"]:
            where = f"{row['batch_id'][:8]} #{row['seq']}"
            error = f"  {row['error_type']}: {row['error']}" if row["matched"] == "error" else ""
            command.stdout.write(f"operation  {where:14} {row['status']:10} {row['label']}{error}")
    if not found["batches"] and not found["operations"]:
        command.stderr.write(f"Nothing matches {options['query']!r}.")
        sys.exit(1)


def export_batch(command, options) -> None:
    key = (options["what"], options["format"])
    if key not in EXPORTS:
        raise CommandError(
            f"No {options['format']} export of {options['what']}: use csv or xlsx.", returncode=BAD_USAGE
        )
    if options["format"] == "xlsx" and options["output"] == "-":
        raise CommandError("An .xlsx file is binary: give --output FILE.", returncode=BAD_USAGE)
    try:
        batch = selectors.batch_find(options["batch"])
    except (Batch.DoesNotExist, Batch.MultipleObjectsReturned) as exc:
        raise CommandError(str(exc.args[0] if exc.args else "No such batch."), returncode=BAD_USAGE) from None
    try:
        response = EXPORTS[key](batch)
    except InvalidInput as exc:
        raise CommandError(_sentence(exc), returncode=BAD_USAGE) from None
    content: Iterable[bytes | str] = response.streaming_content  # type: ignore[assignment]  # sync exports
    chunks = (chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in content)
    if options["output"] == "-":
        command.stdout.flush()
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    with open(options["output"], "wb") as target:
        for chunk in chunks:
            target.write(chunk)
    command.stderr.write(f"Wrote {options['what']} of batch {batch.short_id} to {options['output']}.")
