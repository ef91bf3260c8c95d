"""Readable durations and moments for the pages ("ETA 42 s", "1 min 5 s", "3 minutes ago")."""

import re
from datetime import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from jobs import selectors
from jobs.models import BatchStatus

register = template.Library()


@register.filter
def seconds(value: float | None) -> str:
    """42 s, 3 min 5 s, 2 h 4 min; an en dash for unknown."""
    if value is None or value == "":
        return "–"
    total = int(round(float(value)))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def milliseconds(value: int | None) -> str:
    """850 ms, 1.2 s, 3 min 5 s."""
    if value is None or value == "":
        return ""
    value = int(value)
    if value < 1000:
        return f"{value} ms"
    if value < 60_000:
        return f"{value / 1000:.1f} s"
    return seconds(value / 1000)


@register.filter
def ago(moment: datetime | None) -> str:
    """'3 minutes ago'; Django's naturaltime, one name for all pages."""
    return naturaltime(moment) if moment else ""


@register.filter
def ran_seconds(batch) -> float | None:
    """Seconds the batch was at work (selectors.active_seconds: not the idle gap before a retry)."""
    return selectors.active_seconds(batch)


_CODE = re.compile(r"`([^`]+)`")


@register.filter
def inline_code(text: str) -> SafeString:
    """Plain text in which `backticked` words are code, as the types' descriptions write them."""
    return mark_safe(_CODE.sub(r"<code>\1</code>", str(escape(text or ""))))


@register.filter
def ran_percent(batch) -> int:
    """Share of the operations that ran to an outcome (completed or failed), rounded down: what a
    cancelled batch got done, where percent_complete counts the skipped ones too and says 100."""
    return (batch.completed + batch.failed) * 100 // batch.total if batch.total else 0


@register.filter
def when(moment) -> str:
    """A moment in full in the viewer's zone, the zone named: 2026-12-08 14:05:09 CET."""
    if not moment:
        return ""
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M:%S %Z}"


@register.filter
def error_heading(outcome) -> str:
    """An operation's (or attempt's) error type, to print before its message; "" when the message
    already begins with it ("Cancelled." needs no "Cancelled" before it)."""
    read = outcome.get if isinstance(outcome, dict) else lambda name: getattr(outcome, name, "")
    kind, message = read("error_type") or "", (read("error") or "").strip()
    if not kind or message.startswith(kind):
        return ""
    return kind


@register.filter
def status_label(status: str) -> str:
    """A batch status as people read it: partial_success → Partial success."""
    return str(dict(BatchStatus.choices).get(status, status))
