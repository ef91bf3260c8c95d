"""Streamed CSV downloads (API and pages): constant memory however many rows a batch has.

Rows come from `.iterator(chunk_size=...)` (a server-side cursor on PostgreSQL, fetchmany on SQLite)
and leave as ~64 KiB chunks of CSV text, so neither the rows nor the file are ever held whole.
"""

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from django.http import StreamingHttpResponse

from jobs import selectors
from jobs.models import Batch

CHUNK_ROWS = 2000
FLUSH_BYTES = 64 * 1024


def cell(value: Any) -> str:
    """A CSV cell: empty for None, JSON for booleans, lists and objects, ISO 8601 for datetimes."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def csv_chunks(header: list[str], rows: Iterable[Iterable[Any]], flush_bytes: int = FLUSH_BYTES) -> Iterator[str]:
    """The header line and then `rows` as CSV text, in chunks of about `flush_bytes` characters."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(value) for value in row])
        if buffer.tell() >= flush_bytes:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable[Any]]) -> StreamingHttpResponse:
    """A streamed CSV download named `filename`."""
    response = StreamingHttpResponse(csv_chunks(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _lazy(make: Callable[[], Iterable]) -> Iterator:
    """Run the query only when the response body is first read, not when the view returns."""
    yield from make()


def results_csv_response(batch: Batch, sort: str = "") -> StreamingHttpResponse:
    """The batch's result rows as CSV: the columns of selectors.result_columns, one line per row,
    cells empty where a row lacks the column. InvalidInput for an unknown `sort` column."""
    columns = selectors.result_columns(batch)
    data_columns = columns[1:]
    rows = selectors.result_rows(batch, sort, columns=columns)

    def lines():
        for label, data in rows.iterator(chunk_size=CHUNK_ROWS):
            data = data if isinstance(data, dict) else {}
            yield [label, *(data.get(column) for column in data_columns)]

    return csv_response(f"batch-{batch.short_id}-results.csv", columns, _lazy(lines))


def operations_csv_response(batch: Batch) -> StreamingHttpResponse:
    """The batch's operations table as CSV, by seq (columns: selectors.OPERATION_EXPORT_COLUMNS)."""
    rows = selectors.operation_export_rows(batch)
    return csv_response(
        f"batch-{batch.short_id}-operations.csv",
        list(selectors.OPERATION_EXPORT_COLUMNS),
        _lazy(lambda: rows.iterator(chunk_size=CHUNK_ROWS)),
    )


COMPARE_COLUMNS = [
    "label",
    "change",
    "a_seq",
    "a_status",
    "a_duration_ms",
    "a_error_type",
    "a_error",
    "b_seq",
    "b_status",
    "b_duration_ms",
    "b_error_type",
    "b_error",
    "duration_change_ms",
]


def compare_csv_response(comparison: dict) -> StreamingHttpResponse:
    """The item table of selectors.batch_compare as CSV, regressions first (COMPARE_COLUMNS)."""

    def side(operation: dict | None) -> list:
        if operation is None:
            return [None] * 5
        return [operation[name] for name in ("seq", "status", "duration_ms", "error_type", "error")]

    rows = (
        [item["label"], item["bucket"], *side(item["a"]), *side(item["b"]), item["duration_change_ms"]]
        for item in comparison["items"]
    )
    name = f"compare-{comparison['a']['short_id']}-{comparison['b']['short_id']}.csv"
    return csv_response(name, COMPARE_COLUMNS, rows)


def compare_rows_csv_response(a: Batch, b: Batch, diff: dict) -> StreamingHttpResponse:
    """A row diff (selectors.result_rows_diff with every row) as CSV, one line per differing cell:
    change (added, removed, changed), the key columns, then column, value in A, value in B."""
    key = diff["key"]

    def lines():
        for change, entries in (("changed", diff["changed"]), ("removed", diff["removed"]), ("added", diff["added"])):
            for entry in entries:
                key_values = [entry["key"].get(column) for column in key]
                if change == "changed":
                    for column, values in entry["changes"].items():
                        yield [change, *key_values, column, values["a"], values["b"]]
                    continue
                for column in diff["columns"]:
                    value = entry["row"].get(column)
                    yield [change, *key_values, column, *((value, None) if change == "removed" else (None, value))]

    return csv_response(f"compare-{a.short_id}-{b.short_id}-rows.csv", ["change", *key, "column", "a", "b"], lines())
