"""Result cells that name a file an operation produced (data.generate's CSV files) shown as its
download link, on the batch page's results and the operation page's rows."""

from typing import Any

from django import template
from django.utils.html import format_html

register = template.Library()


@register.filter
def artifact_link(value: Any, urls: dict[str, str] | None) -> Any:
    """A download link when `value` is the path of one of the batch's files (`urls`: path → URL),
    else the value as it was."""
    if isinstance(value, str) and urls and value in urls:
        return format_html('<a href="{}" download>{}</a>', urls[value], value)
    return value
