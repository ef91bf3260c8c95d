"""Items of a batch as people give them: labels or {"label", "params"} objects, in JSON or CSV.

The one parser behind the CLI's --items/--item, the form's upload and the API body.
"""

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

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
