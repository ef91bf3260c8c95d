"""Pure helpers of the analytics selectors: percentiles, histogram bins, error-message grouping.

No database access here, so each definition is shared by both database paths and unit-tested alone.
"""

import math
import re
from datetime import datetime, timedelta

PERCENTILES = (0.50, 0.95, 0.99)
QUALITY_BINS = 10
DURATION_BINS = 20
MESSAGE_MAX = 200


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks: numpy's default ("linear") and PostgreSQL's
    percentile_cont. The value at rank (n - 1) × fraction, interpolated between its neighbours.
    0.0 for no values (analytics of an empty batch are zeros, not errors)."""
    if not sorted_values:
        return 0.0
    position = (len(sorted_values) - 1) * fraction
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return float(sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower))


def nice_width(span: float, bins: int) -> int:
    """The smallest 1, 2 or 5 × 10^k (an integer, at least 1) that covers `span` in `bins` bins."""
    raw = max(span / bins, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * magnitude >= raw:
            return int(step * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def duration_bins(minimum: int, maximum: int, bins: int = DURATION_BINS) -> tuple[int, int, int]:
    """(start, width, count) of integer bins [start + i·width, start + (i+1)·width) covering
    minimum..maximum inclusive, with a round width and about `bins` bins (never more than bins + 1)."""
    width = nice_width(maximum + 1 - minimum, bins)
    start = minimum // width * width
    count = (maximum - start) // width + 1
    return start, width, count


# One pass, alternatives tried in this order at each position: whole tokens (urls, uuids, quoted
# strings, hosts, paths, hex ids) before the numbers inside them.
_PLACEHOLDERS = {
    "url": (r"\b[a-z][a-z0-9+.-]*://\S+", "<url>"),
    "uuid": (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", "<uuid>"),
    "str": (r"'[^']*'|\"[^\"]*\"|`[^`]*`", "<str>"),
    "ip": (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "<ip>"),
    "path": (r"(?<![\w/.])(?:[a-z]:)?(?:[/\\][\w.@~+-]+)+[/\\]?", "<path>"),
    "hex": (r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{6,}\b", "<hex>"),
    "n": (r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", "<n>"),
}
_VARIABLE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, (pattern, _) in _PLACEHOLDERS.items()), re.I)
_SPACES = re.compile(r"\s+")


def normalise_message(message: str) -> str:
    """An error message with its variable parts replaced by placeholders, so messages that differ only
    in numbers, uuids, hex ids, quoted strings, hosts, urls or paths fall in one group:
    "timeout after 31 s on host 10.0.0.5" → "timeout after <n> s on host <ip>"."""
    text = _VARIABLE.sub(lambda match: _PLACEHOLDERS[match.lastgroup][1], message.strip())
    return _SPACES.sub(" ", text)[:MESSAGE_MAX]


# Bucket sizes for completions over time, in seconds: the first giving at most MAX_BUCKETS buckets.
BUCKET_KINDS = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400))
MAX_BUCKETS = 120


def bucket_kind(first: datetime, last: datetime) -> tuple[str, int]:
    """The Trunc kind and its seconds for completions between first and last (at most ~120 buckets)."""
    span = (last - first).total_seconds()
    for kind, seconds in BUCKET_KINDS:
        if span / seconds < MAX_BUCKETS:
            return kind, seconds
    return BUCKET_KINDS[-1]


def floor_to(moment: datetime, seconds: int) -> datetime:
    """`moment` truncated to a multiple of `seconds` (1, 60, 3600 or 86400) in its own timezone."""
    if seconds >= 86400:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if seconds >= 3600:
        return moment.replace(minute=0, second=0, microsecond=0)
    if seconds >= 60:
        return moment.replace(second=0, microsecond=0)
    return moment.replace(microsecond=0)


def bucket_starts(first: datetime, last: datetime, seconds: int) -> list[datetime]:
    """Every bucket start from first's bucket to last's bucket, gaps included."""
    start, end = floor_to(first, seconds), floor_to(last, seconds)
    step = timedelta(seconds=seconds)
    starts = []
    while start <= end:
        starts.append(start)
        start += step
    return starts
