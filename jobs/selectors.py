"""Reads for pages, API and commands (writes live in jobs.services)."""

import uuid
from datetime import datetime, time, timedelta

from django import forms
from django.core.paginator import Paginator
from django.db.models import CharField, Count, Q, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from jobs.errors import InvalidInput
from jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Batch, BatchStatus, OperationStatus, ResultRow


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


def batch_stats(user=None) -> dict:
    """Totals by status and by type, and the completion rate of finished batches."""
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


RESULT_COLUMNS_SAMPLE = 1000


def result_rows(batch: Batch):
    """(operation label, row data) pairs in the order the rows were stored."""
    return ResultRow.objects.filter(batch=batch).order_by("id").values_list("operation__label", "data")


def result_columns(batch: Batch) -> list[str]:
    """`operation`, then the row keys in order of first appearance (over the first 1,000 rows, so a
    streamed export knows its header before it starts)."""
    columns: dict[str, None] = {"operation": None}
    for data in (
        ResultRow.objects.filter(batch=batch).order_by("id").values_list("data", flat=True)[:RESULT_COLUMNS_SAMPLE]
    ):
        if isinstance(data, dict):
            columns.update(dict.fromkeys(data))
    return list(columns)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def batch_analytics(batch: Batch) -> dict:
    """Success rate, duration mean and percentiles of finished operations, failures by error type."""
    finished = batch.completed + batch.failed + batch.skipped
    durations = sorted(
        batch.operations.filter(
            status__in=(OperationStatus.COMPLETED, OperationStatus.FAILED), duration_ms__isnull=False
        )
        .values_list("duration_ms", flat=True)
        .iterator(chunk_size=5000)
    )
    groups = (
        batch.operations.filter(status=OperationStatus.FAILED)
        .values("error_type")
        .annotate(n=Count("id"))
        .order_by("-n", "error_type")
    )
    return {
        "total": batch.total,
        "finished": finished,
        "success_rate": round(batch.completed / finished, 4) if finished else None,
        "duration_mean_ms": round(sum(durations) / len(durations), 1) if durations else None,
        "duration_p50_ms": percentile(durations, 0.50),
        "duration_p95_ms": percentile(durations, 0.95),
        "duration_p99_ms": percentile(durations, 0.99),
        "errors": [
            {"error_type": g["error_type"] or "Error", "count": g["n"], "share": round(g["n"] / batch.failed, 4)}
            for g in groups
        ],
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
    stats = batch_stats(user)
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
