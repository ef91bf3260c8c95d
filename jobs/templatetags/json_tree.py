"""JSON shown as a tree of <details> (an operation's result, its parameters): pretty, and each
object or array collapsible, without any script."""

import json
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

OPEN_DEPTH = 2  # objects and arrays this deep start open; deeper ones start collapsed
MAX_DEPTH = 40  # a deeper value is shown as its JSON text


def _scalar(value: Any) -> str:
    kind = "null" if value is None else "bool" if isinstance(value, bool) else type(value).__name__
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f'<span class="json-{escape(kind)}">{escape(text)}</span>'


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _node(value: Any, depth: int) -> str:
    if isinstance(value, dict) and value and depth < MAX_DEPTH:
        items = "".join(
            f'<li><span class="json-key">{escape(json.dumps(str(key), ensure_ascii=False))}</span>: '
            f"{_node(item, depth + 1)}</li>"
            for key, item in value.items()
        )
        summary = "{ " + _count(len(value), "key", "keys") + " }"
    elif isinstance(value, list) and value and depth < MAX_DEPTH:
        items = "".join(f"<li>{_node(item, depth + 1)}</li>" for item in value)
        summary = "[ " + _count(len(value), "item", "items") + " ]"
    elif isinstance(value, dict | list) and value:
        return _scalar(json.dumps(value, default=str))
    else:
        return _scalar(value)
    opened = " open" if depth < OPEN_DEPTH else ""
    return f'<details class="json"{opened}><summary>{escape(summary)}</summary><ul>{items}</ul></details>'


@register.filter
def json_tree(value: Any) -> SafeString:
    """The value as nested, collapsible lists (strings escaped)."""
    return mark_safe(_node(value, 0))


@register.filter
def json_text(value: Any) -> str:
    """A parameter's value as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
