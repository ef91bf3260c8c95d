"""Reads for pages, API and commands (writes live in jobs.services)."""

import uuid
from datetime import datetime, time, timedelta

from django import forms
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    CharField,
    Count,
    ExpressionWrapper,
    F,
    Field,
    Func,
    IntegerField,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.expressions import OrderBy
from django.db.models.fields.json import KeyTransform, compile_json_path
from django.db.models.functions import Cast, Floor, Trunc
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from jobs import analytics
from jobs.errors import InvalidInput
from jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Batch, BatchStatus, Operation, OperationStatus, ResultRow


def batches_visible_to(user) -> QuerySet[Batch]:
    """Owners see their own batches; staff see all."""
    if user is None or user.is_staff:
        return Batch.objects.all()
    return Batch.objects.filter(owner=user)


def batch_find(reference: str, user=None) -> Batch:
    """A batch by full id or by its short id (a prefix of 4 to 8 hex digits, as lists show it).

    Raises Batch.DoesNotExist (also for another user's batch) or Batch.MultipleObjectsReturned.
    """
    batches = batches_visible_to(user)
    reference = reference.strip().lower()
    try:
        return batches.get(pk=uuid.UUID(reference))
    except ValueError:
        pass
    if not 4 <= len(reference) <= 8 or any(c not in "0123456789abcdef" for c in reference):
        raise Batch.DoesNotExist(f"No batch {reference!r}: give its id or short id.")
    # The first 8 hex digits carry no dash in either database's text form of a UUID.
    matches = list(
        batches.annotate(id_text=Cast("id", CharField()))
        .filter(id_text__startswith=reference)
        .values_list("pk", flat=True)[:2]
    )
    if not matches:
        raise Batch.DoesNotExist(f"No batch {reference!r}.")
    if len(matches) > 1:
        raise Batch.MultipleObjectsReturned(f"{reference!r} matches several batches; give more of the id.")
    return batches.get(pk=matches[0])


def _parse_moment(value: str, field: str, end_of_day: bool) -> datetime:
    """An ISO datetime, or a date meaning the start of that day (or the end of it for `before`)."""
    try:
        day = parse_date(value)
        moment = None if day else parse_datetime(value)
    except ValueError:  # well-formed but impossible, like 2024-13-45
        day = moment = None
    if day is not None:
        moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
    elif moment is None:
        raise InvalidInput({field: [f"Expected an ISO date or datetime, got {value!r}."]})
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def batch_search(
    user,
    *,
    status: str | None = None,
    type: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    text: str | None = None,
) -> QuerySet[Batch]:
    """History filters of pages and API; dates are inclusive (a `created_before` date covers that day)."""
    batches = batches_visible_to(user)
    if status:
        batches = batches.filter(status=status)
    if type:
        batches = batches.filter(type=type)
    if created_after:
        batches = batches.filter(created_at__gte=_parse_moment(created_after, "created_after", False))
    if created_before:
        before = _parse_moment(created_before, "created_before", True)
        batches = (
            batches.filter(created_at__lt=before)
            if "T" not in created_before
            else batches.filter(created_at__lte=before)
        )
    if text:
        batches = batches.filter(Q(name__icontains=text) | Q(description__icontains=text))
    return batches


# --- results ------------------------------------------------------------------------------------

LABEL_COLUMN = "operation"
RESULT_COLUMNS_CACHE_S = 3600
INSTANCE_COLUMN = "_instance"


def result_columns(batch: Batch) -> list[str]:
    """`operation` (the operation's label), `_instance` when rows have one, then the rows' keys in
    order of first appearance.

    Found by the database over every row of the batch (json_each / jsonb_object_keys, grouped by key),
    so a column that only late rows have is not missed and no row is loaded into Python. That scans
    every row (about a second for a million on PostgreSQL), so the answer is cached per batch version:
    rows are only added by a transition, and every transition bumps the version."""
    cache_key = f"batchsite:result-columns:{batch.pk}:{batch.version}"
    cached = cache.get(cache_key)
    if cached is not None:
        return cached
    table = connection.ops.quote_name(ResultRow._meta.db_table)
    batch_column = connection.ops.quote_name(ResultRow._meta.get_field("batch").column)
    batch_id = ResultRow._meta.get_field("batch").get_db_prep_value(batch.pk, connection)
    if connection.vendor == "postgresql":
        sql = f"""
            SELECT k.key FROM {table} r
            CROSS JOIN LATERAL jsonb_object_keys(
                CASE WHEN jsonb_typeof(r.data) = 'object' THEN r.data ELSE '{{}}'::jsonb END
            ) WITH ORDINALITY AS k(key, position)
            WHERE r.{batch_column} = %s
            GROUP BY k.key ORDER BY min(ARRAY[r.id, k.position])"""
    else:
        # json_each's id grows with the key's position inside the row.
        sql = f"""
            SELECT k.key FROM {table} r,
            json_each(CASE WHEN json_type(r.data) = 'object' THEN r.data ELSE '{{}}' END) k
            WHERE r.{batch_column} = %s
            GROUP BY k.key ORDER BY min(r.id * 1048576 + k.id)"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [batch_id])
        keys = [key for (key,) in cursor.fetchall()]
    first = [LABEL_COLUMN] + ([INSTANCE_COLUMN] if INSTANCE_COLUMN in keys else [])
    columns = first + [key for key in keys if key not in first]
    cache.set(cache_key, columns, RESULT_COLUMNS_CACHE_S)
    return columns


class JSONKeyTypeRank(Func):
    """Where a row's value of `data[key]` sorts among other types, the same on both databases:
    0 numbers, 1 strings, 2 booleans, 3 arrays and objects, NULL when missing or JSON null."""

    output_field = IntegerField()

    def __init__(self, key: str, field: str = "data") -> None:
        self.key = key
        super().__init__(F(field))

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        case = (
            f"CASE jsonb_typeof({sql} -> %s) WHEN 'number' THEN 0 WHEN 'string' THEN 1 "
            "WHEN 'boolean' THEN 2 WHEN 'array' THEN 3 WHEN 'object' THEN 3 END"
        )
        return case, (*params, self.key)

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        case = (
            f"CASE JSON_TYPE({sql}, %s) WHEN 'integer' THEN 0 WHEN 'real' THEN 0 WHEN 'text' THEN 1 "
            "WHEN 'true' THEN 2 WHEN 'false' THEN 2 WHEN 'array' THEN 3 WHEN 'object' THEN 3 END"
        )
        return case, (*params, compile_json_path([self.key]))


def result_rows(batch: Batch, sort: str = "", columns: list[str] | None = None) -> QuerySet:
    """(operation label, row data) pairs, in storage order or sorted by a column (`x` ascending,
    `-x` descending; the label column or any row key), sorted by the database.

    Values of one column sort by type first (numbers, strings, booleans, arrays/objects), then by
    value, rows missing the key last; ties keep storage order. Raises InvalidInput (field `sort`)
    for a column the batch's rows do not have (`columns`, if given, saves finding them again)."""
    rows = ResultRow.objects.filter(batch=batch)
    order: list = []
    if sort:
        descending = sort.startswith("-")
        column = sort[1:] if descending else sort
        known = columns if columns is not None else result_columns(batch)
        if column not in known:
            raise InvalidInput({"sort": [f"Unknown column {column!r}; sort by one of: {', '.join(known)}."]})
        if column == LABEL_COLUMN:
            order = [OrderBy(F("operation__label"), descending=descending)]
        else:
            value = KeyTransform(column, "data")
            order = [
                OrderBy(JSONKeyTypeRank(column), descending=descending, nulls_last=True),
                OrderBy(value, descending=descending, nulls_last=True),
            ]
    return rows.order_by(*order, "id").values_list("operation__label", "data")


OPERATION_EXPORT_COLUMNS = (
    "seq label status attempts duration_ms quality_score error_type error started_at finished_at".split()
)


def operation_export_rows(batch: Batch) -> QuerySet:
    """The operations table of a batch as value tuples in OPERATION_EXPORT_COLUMNS order, by seq."""
    return batch.operations.order_by("seq").values_list(*OPERATION_EXPORT_COLUMNS)


# --- analytics ----------------------------------------------------------------------------------


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
        found = timed.aggregate(percentiles=PercentilesCont("duration_ms", analytics.PERCENTILES))["percentiles"]
        return [round(float(value or 0.0), 3) for value in found or [0.0] * len(analytics.PERCENTILES)]
    durations = list(timed.order_by("duration_ms").values_list("duration_ms", flat=True).iterator(chunk_size=10000))
    return [round(analytics.percentile(durations, fraction), 3) for fraction in analytics.PERCENTILES]


def _error_groups(failed: QuerySet) -> tuple[list[dict], list[dict]]:
    """(groups by error type and normalised message, groups by error type), largest first.

    The database groups identical messages first, so Python normalises each distinct message once."""
    groups: dict[tuple[str, str], dict] = {}
    for row in failed.values("error_type", "error").annotate(n=Count("id")).order_by("-n", "error_type", "error"):
        error_type = row["error_type"] or "Error"
        key = (error_type, analytics.normalise_message(row["error"]))
        group = groups.setdefault(
            key, {"error_type": error_type, "message": key[1], "example": row["error"], "count": 0}
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
    start, width, count = analytics.duration_bins(minimum, maximum) if minimum is not None else (0, 1, 0)
    bins = analytics.QUALITY_BINS
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
    kind, seconds = analytics.bucket_kind(first, last)
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
        for start in analytics.bucket_starts(first, last, seconds)
    ]
    return {"bucket": kind, "bucket_seconds": seconds, "buckets": buckets}


def batch_analytics(batch: Batch) -> dict:
    """Figures of a batch's finished (completed or failed) operations, exact, from a few grouped
    queries (no per-operation rows loaded, except the sorted durations on SQLite):

    - counts by status; `success_rate` = completed / (completed + failed + skipped);
    - duration mean, min, max and p50/p95/p99 (linear interpolation, see duration_percentiles);
    - `throughput_per_minute`: finished operations per minute between the first start and the last finish;
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
    aggregates = {status: Count("id", filter=Q(status=status)) for status in OperationStatus.values}
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
        aggregates["percentiles"] = PercentilesCont("duration_ms", analytics.PERCENTILES, filter=done_filter)
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
    span_minutes = (last_finished - first_started).total_seconds() / 60 if first_started and last_finished else 0
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

STATS_HOURS = 24


def operations_per_hour(user=None, *, hours: int = STATS_HOURS, now: datetime | None = None) -> list[dict]:
    """Operations finished (completed or failed) per hour over the last `hours` hours, the current
    hour last, empty hours included; grouped by the database (Trunc on finished_at)."""
    now = timezone.localtime(now or timezone.now())
    first = analytics.floor_to(now, 3600) - timedelta(hours=hours - 1)
    found = (
        Operation.objects.filter(
            batch__in=batches_visible_to(user).values("pk"), status__in=FINISHED, finished_at__gte=first
        )
        .annotate(hour=Trunc("finished_at", "hour"))
        .values("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {(timezone.localtime(row["hour"]), row["status"]): row["n"] for row in found}
    return [
        {
            "start": start,
            "completed": counts.get((start, OperationStatus.COMPLETED), 0),
            "failed": counts.get((start, OperationStatus.FAILED), 0),
        }
        for start in (first + timedelta(hours=i) for i in range(hours))
    ]


def batch_totals(user=None) -> dict:
    """Batches by status and by type, and the completion rate of finished batches (completed /
    (completed + failed + partial success)): a few grouped counts, cheap enough for every
    dashboard refresh."""
    batches = batches_visible_to(user)
    by_status = {row["status"]: row["n"] for row in batches.values("status").annotate(n=Count("id")).order_by()}
    by_type = {row["type"]: row["n"] for row in batches.values("type").annotate(n=Count("id")).order_by()}
    finished = sum(
        by_status.get(s, 0) for s in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.PARTIAL_SUCCESS)
    )
    completed = by_status.get(BatchStatus.COMPLETED, 0)
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_type": by_type,
        "completion_rate": round(completed / finished, 4) if finished else None,
    }


def batch_stats(user=None) -> dict:
    """For /stats/ and GET /api/stats, over the batches `user` may see (staff and None: all): the
    totals of batch_totals(), operations by status (from the batches' counters), and operations
    finished per hour over the last 24 hours."""
    operation_counts = batches_visible_to(user).aggregate(**{name: Sum(name) for name in OperationStatus.values})
    hourly = operations_per_hour(user)
    return {
        **batch_totals(user),
        "operations": {name: operation_counts[name] or 0 for name in OperationStatus.values},
        "operations_last_24h": sum(bucket["completed"] + bucket["failed"] for bucket in hourly),
        "throughput_24h": hourly,
    }


# Subclasses first: FloatField and DecimalField derive from IntegerField.
FIELD_TYPES = {
    forms.BooleanField: "boolean",
    forms.FloatField: "number",
    forms.DecimalField: "number",
    forms.IntegerField: "integer",
    forms.ChoiceField: "choice",
    forms.JSONField: "json",
}


def operation_type_description(optype) -> dict:
    params = []
    for name, field in optype.form.base_fields.items():
        kind = next((label for cls, label in FIELD_TYPES.items() if isinstance(field, cls)), "string")
        params.append(
            {
                "name": name,
                "label": str(field.label or name),
                "type": kind,
                "required": field.required and field.initial is None,
                "default": field.initial,
                "help": str(field.help_text or ""),
            }
        )
    return {
        "key": optype.key,
        "label": optype.label,
        "description": optype.description,
        "items_help": optype.items_help,
        "params": params,
    }


def dashboard_context(user) -> dict:
    """What the dashboard shows: active batches first, then the recently finished, and totals.
    The page and its WebSocket consumer both render from this."""
    visible = batches_visible_to(user).select_related("owner")
    stats = batch_totals(user)
    stats["active"] = sum(stats["by_status"].get(s, 0) for s in (BatchStatus.PENDING, *ACTIVE_STATUSES))
    return {
        "active": list(visible.filter(status__in=(BatchStatus.PENDING, *ACTIVE_STATUSES))[:20]),
        "recent": list(visible.filter(status__in=TERMINAL_STATUSES).order_by("-finished_at")[:10]),
        "stats": stats,
    }


OPERATIONS_PER_PAGE = 50


def operations_page(batch: Batch, *, status: str = "", page: str | int | None = None):
    """One page of a batch's operations (by seq), optionally of one status; the page and its
    WebSocket consumer use the same pages, so the consumer knows which rows the page shows."""
    operations = batch.operations.all()
    if status in OperationStatus.values:
        operations = operations.filter(status=status)
    return Paginator(operations, OPERATIONS_PER_PAGE).get_page(page)
