"""Analytics of a batch (success rate, percentiles, histograms, error groups, completions) and the
pure helpers behind them (percentiles, histogram bins, error-message grouping), which touch no
database so both database paths share them and they are unit-tested alone.
"""

import math
import re
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    ExpressionWrapper,
    F,
    Field,
    IntegerField,
    Max,
    Min,
    Q,
    QuerySet,
    Value,
)
from django.db.models.functions import Floor, Trunc
from django.utils import timezone

from jobs.models import Batch, BatchEventKind, Operation, OperationStatus

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
    # Kept as it is, not a placeholder: an HTTP status tells failures apart ("HTTP 503" is not "HTTP 404").
    "status": (r"\bHTTP(?:/[\d.]+)?\s+[1-5]\d\d\b|\bstatus(?:[ _]code)?\s*[:=]?\s*[1-5]\d\d\b", ""),
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
    "timeout after 31 s on host 10.0.0.5" → "timeout after <n> s on host <ip>". HTTP statuses
    ("HTTP 503", "status 404") stay: they are the kind of failure, not a detail of it."""
    text = _VARIABLE.sub(lambda match: _PLACEHOLDERS[match.lastgroup or ""][1] or match.group(0), message.strip())
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


class PercentilesCont(Aggregate):
    """PostgreSQL's ordered-set aggregate over an array of fractions (one sort for all of them):
    linear interpolation between closest ranks. Its value is a list of floats."""

    function = "percentile_cont"
    template = "%(function)s(ARRAY[%(fractions)s]::double precision[]) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = Field()

    def __init__(self, expression, fractions: tuple[float, ...], **extra) -> None:
        super().__init__(expression, fractions=", ".join(repr(float(f)) for f in fractions), **extra)


FINISHED = (OperationStatus.COMPLETED, OperationStatus.FAILED)


def duration_percentiles(operations: QuerySet, *, in_database: bool | None = None) -> list[float]:
    """p50, p95 and p99 of `duration_ms` over `operations` (rows without a duration left out), by
    linear interpolation (numpy's default, PostgreSQL's percentile_cont): PostgreSQL computes them
    in the query; elsewhere the sorted durations are streamed and interpolated in Python, with the
    same definition, so both databases give identical figures (rounded to 0.001 ms, which also
    hides the last-bit differences of the two float computations). Zeros when there is nothing."""
    timed = operations.filter(duration_ms__isnull=False).order_by()
    if in_database is None:
        in_database = connection.vendor == "postgresql"
    if in_database:
        found = timed.aggregate(percentiles=PercentilesCont("duration_ms", PERCENTILES))["percentiles"]
        return [round(float(value or 0.0), 3) for value in found or [0.0] * len(PERCENTILES)]
    durations = list(timed.order_by("duration_ms").values_list("duration_ms", flat=True).iterator(chunk_size=10000))
    return [round(percentile(durations, fraction), 3) for fraction in PERCENTILES]


def top_error_group(batch) -> dict | None:
    """The batch's largest group of failures (error type, normalised message, example, count)."""
    groups, _ = _error_groups(batch.operations.filter(status=OperationStatus.FAILED))
    return groups[0] if groups else None


def _error_groups(failed: QuerySet) -> tuple[list[dict], list[dict]]:
    """(groups by error type and normalised message, groups by error type), largest first.

    The database groups identical messages first, so Python normalises each distinct message once."""
    groups: dict[tuple[str, str], dict] = {}
    for row in failed.values("error_type", "error").annotate(n=Count("id")).order_by("-n", "error_type", "error"):
        error_type = row["error_type"] or "Error"
        key = (error_type, normalise_message(row["error"]))
        group = groups.setdefault(
            key,
            # filter_type: what the operations tab filters by (an empty stored type has none).
            {
                "error_type": error_type,
                "filter_type": row["error_type"],
                "message": key[1],
                "example": row["error"],
                "count": 0,
            },
        )
        group["count"] += row["n"]
    total = sum(group["count"] for group in groups.values())
    by_message = sorted(groups.values(), key=lambda g: (-g["count"], g["error_type"], g["message"]))
    by_type: dict[str, int] = {}
    for group in by_message:
        by_type[group["error_type"]] = by_type.get(group["error_type"], 0) + group["count"]
    for group in by_message:
        group["share"] = round(group["count"] / total, 4)
    types = [
        {"error_type": name, "count": count, "share": round(count / total, 4)}
        for name, count in sorted(by_type.items(), key=lambda item: (-item[1], item[0]))
    ]
    return by_message, types


def _histograms(finished: QuerySet, minimum: int | None, maximum: int | None) -> tuple[dict, dict]:
    """(duration histogram, quality histogram) from one grouped query: the database counts operations
    per (duration bin, quality bin) pair, at most about 21 × 10 groups, and Python sums the margins."""
    start, width, count = duration_bins(minimum, maximum) if minimum is not None and maximum is not None else (0, 1, 0)
    bins = QUALITY_BINS
    duration_counts, quality_counts = [0] * count, [0] * bins
    if minimum is not None or finished.filter(quality_score__isnull=False).exists():
        # Durations are integers: integer division puts each in its bin on both databases.
        duration_bin = ExpressionWrapper((F("duration_ms") - Value(start)) / Value(width), output_field=IntegerField())
        # Clamped in Python: PostgreSQL's GREATEST and LEAST skip NULLs, SQLite's MAX and MIN return NULL.
        quality_bin = Floor(F("quality_score") * bins)
        pairs = finished.annotate(d=duration_bin, q=quality_bin).values("d", "q").annotate(n=Count("id")).order_by()
        for row in pairs:
            if row["d"] is not None and count:
                duration_counts[min(int(row["d"]), count - 1)] += row["n"]
            if row["q"] is not None:
                quality_counts[min(max(int(row["q"]), 0), bins - 1)] += row["n"]
    duration = {
        "edges": [start + i * width for i in range(count + 1)] if count else [],
        "counts": duration_counts,
        "bin_width_ms": width if count else 0,
    }
    quality = {"edges": [round(i / bins, 2) for i in range(bins + 1)], "counts": quality_counts}
    return duration, quality


def _completions(finished: QuerySet, first: datetime | None, last: datetime | None) -> dict:
    if first is None or last is None:
        return {"bucket": "minute", "bucket_seconds": 60, "buckets": []}
    first, last = timezone.localtime(first), timezone.localtime(last)
    kind, seconds = bucket_kind(first, last)
    found = (
        finished.filter(finished_at__isnull=False)
        .annotate(bucket=Trunc("finished_at", kind))
        .values("bucket", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {(timezone.localtime(row["bucket"]), row["status"]): row["n"] for row in found}
    buckets = [
        {
            "start": start,
            "completed": counts.get((start, OperationStatus.COMPLETED), 0),
            "failed": counts.get((start, OperationStatus.FAILED), 0),
        }
        for start in bucket_starts(first, last, seconds)
    ]
    return {"bucket": kind, "bucket_seconds": seconds, "buckets": buckets}


# Timeline events that start and stop a batch's work: the time between a stop and the next start
# (a finished batch waiting for a person's retry, a pause) is idle and counts in neither "ran"
# nor throughput.
# "extended" is a finished batch reopened with added operations; "expired" its deadline's end.
RUN_STARTS = (BatchEventKind.STARTED, BatchEventKind.RETRIED, BatchEventKind.RESUMED, BatchEventKind.EXTENDED)
RUN_STOPS = (BatchEventKind.FINISHED, BatchEventKind.PAUSED, BatchEventKind.CANCELLED, BatchEventKind.EXPIRED)


def active_intervals(batch: Batch, now: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """The spans in which the batch was at work, from its timeline: each opens at a start (started,
    retried, resumed) and closes at the next stop (finished, paused, cancelled); one still open
    ends `now`. A start while already at work (a retry of a running batch) opens nothing new."""
    now = now or timezone.now()
    intervals: list[tuple[datetime, datetime]] = []
    since: datetime | None = None
    events = batch.events.filter(kind__in=(*RUN_STARTS, *RUN_STOPS)).order_by("created_at", "id")
    for kind, at in events.values_list("kind", "created_at"):
        if kind in RUN_STARTS and since is None:
            since = at
        elif kind in RUN_STOPS and since is not None:
            intervals.append((since, at))
            since = None
    if since is not None:
        intervals.append((since, max(now, since)))
    return intervals


def active_seconds(batch: Batch, now: datetime | None = None) -> float | None:
    """How long the batch has been at work (the sum of active_intervals), None before it started.
    Unlike finished_at - started_at, it leaves out the idle gap before a retry and pauses."""
    intervals = active_intervals(batch, now)
    if not intervals:
        if batch.started_at is None:
            return None
        return ((batch.finished_at or now or timezone.now()) - batch.started_at).total_seconds()
    return sum((end - start).total_seconds() for start, end in intervals)


def _overlap_seconds(intervals: list[tuple[datetime, datetime]], first: datetime, last: datetime) -> float:
    return sum(max(0.0, (min(end, last) - max(start, first)).total_seconds()) for start, end in intervals)


def batch_analytics(batch: Batch) -> dict:
    """Figures of a batch's finished (completed or failed) operations, exact, from a few grouped
    queries (no per-operation rows loaded, except the sorted durations on SQLite):

    - counts by status; `success_rate` = completed / (completed + failed + skipped);
    - duration mean, min, max and p50/p95/p99 (linear interpolation, see duration_percentiles);
    - `throughput_per_minute`: finished operations per minute between the first start and the last
      finish, counting only the time the batch was at work (active_intervals: not the idle gap
      before a person's retry, nor pauses);
    - `errors`: failures grouped by error type and normalised message (numbers, uuids, hex ids, quoted
      strings, hosts, urls and paths as placeholders), with a raw example, count and share of failures;
      `error_types`: the same by error type only;
    - `quality_histogram`: 10 bins over 0–1 (the last includes 1.0); `duration_histogram`: about 20
      round-width bins, `edges` has one more entry than `counts`, bin i is [edges[i], edges[i+1]);
    - `completions`: finished operations per bucket (second, minute, hour or day, whichever gives at
      most 120 buckets), completed and failed apart, empty buckets included.

    A batch with nothing finished gives zeros and empty lists."""
    operations = Operation.objects.filter(batch=batch).order_by()
    done_filter = Q(status__in=FINISHED)
    # One scan for the counts, the duration and quality summaries and, on PostgreSQL, the percentiles.
    aggregates: dict[str, Aggregate] = {
        status: Count("id", filter=Q(status=status)) for status in OperationStatus.values
    }
    aggregates.update(
        timed=Count("duration_ms", filter=done_filter),
        mean=Avg("duration_ms", filter=done_filter),
        minimum=Min("duration_ms", filter=done_filter),
        maximum=Max("duration_ms", filter=done_filter),
        scored=Count("quality_score", filter=done_filter),
        quality_mean=Avg("quality_score", filter=done_filter),
        first_started=Min("started_at", filter=done_filter),
        first_finished=Min("finished_at", filter=done_filter),
        last_finished=Max("finished_at", filter=done_filter),
    )
    in_database = connection.vendor == "postgresql"
    if in_database:
        aggregates["percentiles"] = PercentilesCont("duration_ms", PERCENTILES, filter=done_filter)
    summary = operations.aggregate(**aggregates)
    counts = {status: summary[status] for status in OperationStatus.values}
    completed, failed = counts[OperationStatus.COMPLETED], counts[OperationStatus.FAILED]
    skipped = counts[OperationStatus.SKIPPED]
    finished = operations.filter(done_filter)
    if in_database:
        p50, p95, p99 = (round(float(value or 0.0), 3) for value in summary["percentiles"] or [0.0] * 3)
    else:
        p50, p95, p99 = duration_percentiles(finished, in_database=False)
    first_started, last_finished = summary["first_started"], summary["last_finished"]
    span_minutes = 0.0
    if first_started and last_finished:
        # Between the first start and the last finish, only while the batch was at work.
        intervals = active_intervals(batch)
        span = (
            _overlap_seconds(intervals, first_started, last_finished)
            if intervals
            else (last_finished - first_started).total_seconds()
        )
        span_minutes = span / 60
    errors, error_types = _error_groups(operations.filter(status=OperationStatus.FAILED))
    duration_histogram, quality_histogram = _histograms(finished, summary["minimum"], summary["maximum"])
    done = completed + failed + skipped
    return {
        "total": sum(counts.values()),
        "finished": done,
        "completed": completed,
        "failed": failed,
        "skipped": skipped,
        "success_rate": round(completed / done, 4) if done else 0.0,
        "duration_count": summary["timed"],
        "duration_mean_ms": round(float(summary["mean"]), 1) if summary["mean"] is not None else 0.0,
        "duration_min_ms": summary["minimum"] or 0,
        "duration_max_ms": summary["maximum"] or 0,
        "duration_p50_ms": p50,
        "duration_p95_ms": p95,
        "duration_p99_ms": p99,
        "first_started_at": first_started,
        "last_finished_at": last_finished,
        "throughput_per_minute": round((completed + failed) / span_minutes, 2) if span_minutes > 0 else 0.0,
        "errors": errors,
        "error_types": error_types,
        "quality_count": summary["scored"],
        "quality_mean": round(float(summary["quality_mean"]), 4) if summary["quality_mean"] is not None else 0.0,
        "quality_histogram": quality_histogram,
        "duration_histogram": duration_histogram,
        "completions": _completions(finished, summary["first_finished"], last_finished),
    }


# --- stats --------------------------------------------------------------------------------------
