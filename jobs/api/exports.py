"""Streamed downloads (API and pages): CSV, JSONL and .xlsx, constant memory however many rows a
batch has.

Rows come from `.iterator(chunk_size=...)` (a server-side cursor on PostgreSQL, fetchmany on SQLite).
CSV and JSONL leave as ~64 KiB chunks of text, so neither the rows nor the file are ever held whole.
An .xlsx is a zip whose sheet must be complete before the archive is: openpyxl's write-only mode
writes the rows to a temporary file on disk, and the finished workbook is sent from another one.
"""

import csv
import io
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.http import StreamingHttpResponse

from jobs import selectors
from jobs.errors import InvalidInput
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


def _result_lines(batch: Batch, sort: str):
    """(columns, the row query, a function yielding each row's cells in column order): what the
    results exports share. InvalidInput for an unknown `sort` column."""
    columns = selectors.result_columns(batch)
    data_columns = columns[1:]
    rows = selectors.result_rows(batch, sort, columns=columns)

    def lines():
        for label, data in rows.iterator(chunk_size=CHUNK_ROWS):
            data = data if isinstance(data, dict) else {}
            yield [label, *(data.get(column) for column in data_columns)]

    return columns, rows, lines


def results_csv_response(batch: Batch, sort: str = "") -> StreamingHttpResponse:
    """The batch's result rows as CSV: the columns of selectors.result_columns, one line per row,
    cells empty where a row lacks the column. InvalidInput for an unknown `sort` column."""
    columns, _, lines = _result_lines(batch, sort)
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


# --- JSONL ---------------------------------------------------------------------------------------

RESULT_JSONL_FIELDS = ("seq", "label", "status", "result", "error_type", "error")


def jsonl_chunks(objects: Iterable[dict[str, Any]], flush_bytes: int = FLUSH_BYTES) -> Iterator[bytes]:
    """One JSON object a line (UTF-8), in chunks of about `flush_bytes` bytes."""
    parts: list[bytes] = []
    size = 0
    for obj in objects:
        line = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode()
        parts.append(line)
        size += len(line)
        if size >= flush_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def results_jsonl_response(batch: Batch) -> StreamingHttpResponse:
    """One object per operation, by seq: seq, label, status, result, error_type, error (as a
    batch API's output and error files, in one file)."""
    rows = batch.operations.order_by("seq").values_list(*RESULT_JSONL_FIELDS)

    def objects():
        for values in rows.iterator(chunk_size=CHUNK_ROWS):
            yield dict(zip(RESULT_JSONL_FIELDS, values, strict=True))

    response = StreamingHttpResponse(jsonl_chunks(_lazy(objects)), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="batch-{batch.short_id}-results.jsonl"'
    response["Cache-Control"] = "no-store"
    return response


# --- .xlsx ---------------------------------------------------------------------------------------

XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSX_MAX_ROWS = 1_048_575  # a sheet's 1,048,576 rows less the header
XLSX_MAX_TEXT = 32_767  # the most characters a cell holds


def xlsx_cell(value: Any) -> Any:
    """A value as a typed cell: numbers (Decimal too) and booleans as such, datetimes as Excel dates
    in UTC (Excel has no time zones), lists and objects as JSON text."""
    if value is None or isinstance(value, bool | int | float | Decimal):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return value
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    return str(value)


def xlsx_file(header: list[str], rows: Iterable[Iterable[Any]], sheet_title: str) -> Any:
    """A finished workbook of one sheet in an open temporary file (at position 0). Text cells are
    always text: a label like `=HYPERLINK(...)` must not become a formula."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    book = Workbook(write_only=True)
    sheet = book.create_sheet(sheet_title)
    sheet.append(header)
    for row in rows:
        cells = []
        for raw in row:
            value = xlsx_cell(raw)
            if isinstance(value, str):
                cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value)[:XLSX_MAX_TEXT])
                cell.data_type = "s"
                cells.append(cell)
            else:
                cells.append(value)
        sheet.append(cells)
    out = tempfile.TemporaryFile()
    book.save(out)
    out.seek(0)
    return out


def _file_chunks(make: Callable[[], Any]) -> Iterator[bytes]:
    with make() as file:
        while chunk := file.read(FLUSH_BYTES):
            yield chunk


def xlsx_response(
    filename: str, header: list[str], rows: Callable[[], Iterable[Iterable[Any]]], count: int, sheet: str
) -> StreamingHttpResponse:
    """A streamed .xlsx download; InvalidInput (field `format`) when `count` rows exceed a sheet."""
    if count > XLSX_MAX_ROWS:
        raise InvalidInput(
            {"format": [f"{count} rows are more than a sheet holds ({XLSX_MAX_ROWS}); download CSV or JSONL."]}
        )
    response = StreamingHttpResponse(
        _file_chunks(lambda: xlsx_file(header, rows(), sheet)), content_type=XLSX_CONTENT_TYPE
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def results_xlsx_response(batch: Batch, sort: str = "") -> StreamingHttpResponse:
    """The rows of results.csv as a sheet with typed cells."""
    columns, rows, lines = _result_lines(batch, sort)
    return xlsx_response(f"batch-{batch.short_id}-results.xlsx", columns, lines, rows.count(), "results")


def operations_xlsx_response(batch: Batch) -> StreamingHttpResponse:
    """The operations table of operations.csv as a sheet with typed cells (times in UTC)."""
    rows = selectors.operation_export_rows(batch)
    return xlsx_response(
        f"batch-{batch.short_id}-operations.xlsx",
        list(selectors.OPERATION_EXPORT_COLUMNS),
        lambda: rows.iterator(chunk_size=CHUNK_ROWS),
        batch.total,
        "operations",
    )
