"""What running operations report of themselves, on the batch page's "Current" column."""

from django import template

from jobs import selectors
from jobs.models import Batch, Operation

register = template.Library()


@register.simple_tag
def current_report(batch: Batch) -> Operation | None:
    """The first running operation of the batch that reported progress or a note, if any."""
    if not batch.running:
        return None
    return selectors.running_report(batch)


@register.filter
def progress_text(progress: dict | None) -> str:
    """`12 / 40 (30 %) · copying` from an operation's progress."""
    if not progress:
        return ""
    parts = []
    if progress["done"] is not None:
        done = _figure(progress["done"])
        if progress["total"]:
            parts.append(f"{done} / {_figure(progress['total'])} ({progress['percent']:g} %)")
        else:
            parts.append(done)
    if progress["note"]:
        parts.append(progress["note"])
    return " · ".join(parts)


def _figure(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))
