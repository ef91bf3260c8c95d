"""Filters of the comparison page: signed changes, JSON cells, dict lookups."""

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def get_item(mapping: dict, key: str) -> Any:
    return mapping.get(key, "")


@register.filter
def sides(item: dict) -> list[dict | None]:
    """A comparison item's operations, A then B (None for a missing side)."""
    return [item["a"], item["b"]]


@register.filter
def key_values(entry: dict, key: list[str]) -> list[Any]:
    return [entry["key"].get(column) for column in key]


@register.filter
def signed_ms(value: float | None) -> str:
    """+120 ms, −1.5 s, ±0 ms: a duration change."""
    if value is None or value == "":
        return "–"
    value = float(value)
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    size = abs(value)
    text = f"{size:.0f} ms" if size < 1000 else f"{size / 1000:.1f} s"
    return f"{sign}{text}"


@register.filter
def signed_pct(value: float | None) -> str:
    if value is None or value == "":
        return ""
    return f"{'+' if value > 0 else '−' if value < 0 else '±'}{abs(float(value)):.1f} %"


@register.filter
def json_cell(value: Any) -> str:
    """A result value as text: strings as they are, null as an empty cell, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
