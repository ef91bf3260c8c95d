"""Items of a batch as people give them: labels or {"label", "params"} objects, in JSON or CSV.

The one parser behind the CLI's --items/--item, the form's upload and the API body.
"""

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from jobs import nul
from jobs.errors import InvalidInput

LABEL_MAX_LENGTH = 255


@dataclass(frozen=True)
class Item:
    label: str
    params: dict[str, Any] = field(default_factory=dict)


def normalize_items(raw: Any, path: str = "items") -> list[Item]:
    """Turn a JSON-like list of labels or objects into Items, or raise InvalidInput with paths."""
    if not isinstance(raw, list):
        raise InvalidInput({path: ["Must be a list of labels or {label, params} objects."]})
    items: list[Item] = []
    errors: dict[str, list[str]] = {}
    for index, entry in enumerate(raw):
        where = f"{path}[{index}]"
        if isinstance(entry, Item):
            entry = {"label": entry.label, "params": entry.params}
        if isinstance(entry, dict):
            unknown = set(entry) - {"label", "params"}
            if unknown:
                errors[where] = [f"Unknown key(s): {', '.join(sorted(unknown))}; expected label and params."]
                continue
            label, params = entry.get("label"), entry.get("params", {})
            if params is None:
                params = {}
            if not isinstance(params, dict):
                errors[f"{where}.params"] = ["Must be an object."]
                continue
        else:
            label, params = entry, {}
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            label = str(label)
        if not isinstance(label, str) or not label.strip():
            errors[f"{where}.label" if isinstance(entry, dict) else where] = ["A non-empty text label is required."]
            continue
        label = label.strip()
        if nul.NUL in label:
            errors[f"{where}.label" if isinstance(entry, dict) else where] = [nul.MESSAGE]
            continue
        if len(label) > LABEL_MAX_LENGTH:
            errors[f"{where}.label"] = [f"At most {LABEL_MAX_LENGTH} characters."]
            continue
        items.append(Item(label=label, params=params))
    if errors:
        raise InvalidInput(errors)
    return items


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_value(text: str) -> Any:
    """A `k=v` value: JSON when it parses (numbers, booleans, null, objects), else the text.

    NaN and Infinity, which Python's json accepts, stay text: they are not JSON."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return text


def parse_key_values(pairs: list[str], path: str = "params") -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput({path: [f"Expected key=value, got {pair!r}."]})
        params[key.strip()] = parse_value(value)
    return params


def parse_items_text(text: str, filename: str = "", path: str = "items") -> list[Item]:
    """An items file: a JSON array, or a CSV with a `label` column (other columns are params)."""
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        raise InvalidInput({path: ["The items file is empty."]})
    if filename.lower().endswith(".json") or stripped.startswith("["):
        try:
            raw = json.loads(stripped)
        except ValueError as exc:
            raise InvalidInput({path: [f"Not valid JSON: {exc}."]}) from None
        return normalize_items(raw, path)
    return _parse_csv(stripped, path)


def _parse_csv(text: str, path: str) -> list[Item]:
    try:
        return _read_csv(text, path)
    except csv.Error as exc:
        # e.g. a cell longer than csv.field_size_limit() (131,072 characters): a bad file, not a crash.
        raise InvalidInput({path: [f"Not a readable CSV file: {exc}."]}) from None


def _read_csv(text: str, path: str) -> list[Item]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "label" not in [f.strip() for f in reader.fieldnames]:
        raise InvalidInput({path: ["A CSV items file needs a 'label' column (or give a JSON array)."]})
    raw = []
    for index, row in enumerate(reader):
        if None in row:
            raise InvalidInput({f"{path}[{index}]": ["This CSV row has more cells than the header has columns."]})
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        params = {k: parse_value(v) for k, v in row.items() if k and k != "label" and v != ""}
        raw.append({"label": row.get("label", ""), "params": params})
    return normalize_items(raw, path)


# --- items files: .jsonl, .csv, .xlsx (and a JSON array) ---------------------------------------

ITEMS_FILE_MAX_BYTES = 20 * 1024 * 1024
ITEMS_FILE_KINDS = ("jsonl", "csv", "xlsx", "json")
_XLSX_MAGIC = b"PK\x03\x04"
_ITEM_ERROR_PATH = re.compile(r"^items\[(\d+)\](?:\.(label|params)(?:\.(.+))?)?$")


@dataclass(frozen=True)
class ItemsFile:
    """The items of one file and where each came from ("row 7", "line 3"), so that an error the
    service finds later (`items[5].params.duration_ms`) can name the file's row and column."""

    name: str
    kind: str
    items: list[Item]
    places: list[str]

    def where(self, index: int, param: str | None = None) -> str:
        place = f"{self.name} {self.places[index]}"
        if not param:
            return place
        return f'{place}, {"column" if self.kind in ("csv", "xlsx") else "param"} "{param}"'

    def explain(self, exc: InvalidInput, path: str = "items", offset: int = 0) -> InvalidInput:
        """`exc` with its errors about items of this file (numbered from `offset` among all the
        items given) as messages under `path` that name the row or line and the column."""
        errors: dict[str, list[str]] = {}
        for key, messages in exc.errors.items():
            found = _ITEM_ERROR_PATH.match(key)
            index = int(found.group(1)) - offset if found else -1
            if found is None or not 0 <= index < len(self.places):
                errors.setdefault(key, []).extend(messages)
                continue
            where = self.where(index, found.group(3) or ("params" if found.group(2) == "params" else None))
            errors.setdefault(path, []).extend(f"{where}: {message}" for message in messages)
        return type(exc)(errors, message=exc.message)


def items_file_kind(name: str, data: bytes) -> str:
    """The format of an items file: by its extension, else by its first bytes."""
    suffix = name.lower().rpartition(".")[2] if "." in name else ""
    if suffix == "ndjson":
        return "jsonl"
    if suffix in ITEMS_FILE_KINDS:
        return suffix
    if data.startswith(_XLSX_MAGIC):
        return "xlsx"
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return {b"[": "json", b"{": "jsonl"}.get(head, "csv")


def read_items_file(data: bytes, name: str, path: str = "items", max_rows: int | None = None) -> ItemsFile:
    """Items from the bytes of a .jsonl (a label or {"label", "params"} a line), .csv or .xlsx (first
    sheet; a `label` column, the other columns per-item params) or .json (an array) file.

    InvalidInput under `path` naming the file's line or row (and column) on any error; at most
    ITEMS_FILE_MAX_BYTES bytes and `max_rows` items (default: BATCH_MAX_OPERATIONS)."""
    name = name.rsplit("/", 1)[-1] or "items"
    limit = int(settings.BATCH_MAX_OPERATIONS) if max_rows is None else max_rows
    if len(data) > ITEMS_FILE_MAX_BYTES:
        raise InvalidInput({path: [f"{name} is larger than {ITEMS_FILE_MAX_BYTES // (1024 * 1024)} MB, the limit."]})
    kind = items_file_kind(name, data)
    if kind == "xlsx":
        raw, places = _xlsx_rows(data, name, path, limit)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise InvalidInput({path: [f"{name} line {line}: Not UTF-8 text."]}) from None
        if not text.strip():
            raise InvalidInput({path: [f"{name}: The items file is empty."]})
        reader = {"jsonl": _jsonl_rows, "csv": _csv_rows, "json": _json_rows}[kind]
        raw, places = reader(text, name, path, limit)
    if not raw:
        raise InvalidInput({path: [f"{name}: The file holds no items."]})
    found = ItemsFile(name=name, kind=kind, items=[], places=places)
    for index, entry in enumerate(raw):
        # PostgreSQL cannot store a NUL anywhere in a label or a param (text, jsonb).
        where = nul.nul_path(entry, "")
        if where is not None:
            param = where.removeprefix("params.") if where.startswith("params.") else None
            raise InvalidInput({path: [f"{found.where(index, param)}: {nul.MESSAGE}"]})
    try:
        items = normalize_items(raw)
    except InvalidInput as exc:
        raise found.explain(exc, path) from None
    return ItemsFile(name=name, kind=kind, items=items, places=places)


def _too_many(name: str, path: str, limit: int) -> InvalidInput:
    return InvalidInput({path: [f"{name} has more than {limit} items; the limit is {limit} operations per batch."]})


def _jsonl_rows(text: str, name: str, path: str, limit: int) -> tuple[list[Any], list[str]]:
    raw: list[Any] = []
    places: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise InvalidInput({path: [f"{name} line {number}: Not valid JSON: {exc}."]}) from None
        if len(raw) == limit:
            raise _too_many(name, path, limit)
        raw.append(entry)
        places.append(f"line {number}")
    return raw, places


def _json_rows(text: str, name: str, path: str, limit: int) -> tuple[list[Any], list[str]]:
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise InvalidInput({path: [f"{name}: Not valid JSON: {exc}."]}) from None
    if not isinstance(raw, list):
        raise InvalidInput({path: [f"{name}: Must be a list of labels or {{label, params}} objects."]})
    if len(raw) > limit:
        raise _too_many(name, path, limit)
    return raw, [f"item {number}" for number in range(1, len(raw) + 1)]


def _csv_rows(text: str, name: str, path: str, limit: int) -> tuple[list[Any], list[str]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [cell.strip() for cell in next(reader)]
        if "label" not in header:
            raise InvalidInput({path: [f"{name} row 1: A CSV items file needs a 'label' column."]})
        raw: list[Any] = []
        places: list[str] = []
        for cells in reader:
            row = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header):
                raise InvalidInput({path: [f"{name} row {row}: More cells than the header has columns."]})
            if len(raw) == limit:
                raise _too_many(name, path, limit)
            values = {column: cell.strip() for column, cell in zip(header, cells, strict=False) if column}
            params = {k: parse_value(v) for k, v in values.items() if k != "label" and v != ""}
            raw.append({"label": values.get("label", ""), "params": params})
            places.append(f"row {row}")
    except csv.Error as exc:
        # e.g. a cell longer than csv.field_size_limit() (131,072 characters): a bad file, not a crash.
        raise InvalidInput({path: [f"{name} row {reader.line_num}: Not a readable CSV file: {exc}."]}) from None
    return raw, places


def _xlsx_cell(value: Any) -> Any:
    """A spreadsheet cell as a param: numbers stay numbers, dates become ISO 8601 text."""
    import datetime as dt
    from decimal import Decimal

    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return value


def _xlsx_rows(data: bytes, name: str, path: str, limit: int) -> tuple[list[Any], list[str]]:
    import zipfile

    import openpyxl
    from openpyxl.cell.cell import ERROR_CODES
    from openpyxl.utils import get_column_letter

    try:
        # read_only streams the sheet's XML rather than building every cell in memory.
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise InvalidInput({path: [f"{name}: Not a readable .xlsx file: {exc}."]}) from None
    try:
        sheet = book.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        header_row = next(rows, None) or ()
        header = [str(cell).strip() if cell is not None else "" for cell in header_row]
        if "label" not in header:
            raise InvalidInput({path: [f'{name} row 1: The first sheet needs a "label" column.']})
        raw: list[Any] = []
        places: list[str] = []
        for row_number, cells in enumerate(rows, 2):
            if all(cell is None or (isinstance(cell, str) and not cell.strip()) for cell in cells):
                continue
            values: dict[str, Any] = {}
            for position, cell in enumerate(cells):
                column = header[position] if position < len(header) else ""
                if cell is None or (isinstance(cell, str) and not cell.strip()):
                    continue
                if not column:
                    letter = get_column_letter(position + 1)
                    raise InvalidInput({path: [f"{name} row {row_number}, column {letter}: A value under no header."]})
                if isinstance(cell, str) and cell in ERROR_CODES:
                    raise InvalidInput(
                        {path: [f'{name} row {row_number}, column "{column}": The cell holds the error {cell}.']}
                    )
                values[column] = _xlsx_cell(cell)
            if len(raw) == limit:
                raise _too_many(name, path, limit)
            label = values.pop("label", "")
            raw.append({"label": str(label) if isinstance(label, int | float) else label, "params": values})
            places.append(f"row {row_number}")
    finally:
        book.close()
    return raw, places
