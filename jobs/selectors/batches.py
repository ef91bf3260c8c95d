"""Reads of batches: who may see which, finding, searching, the dashboard, stats, operation pages."""

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.db.models import (
    CharField,
    Count,
    Exists,
    OuterRef,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import Cast, Trunc
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from jobs.errors import BatchNotFound, InvalidInput
from jobs.models import (
    ACTIVE_STATUSES,
    NOT_STARTED_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchStatus,
    Operation,
    OperationStatus,
)
from jobs.optypes import all_types
from jobs.selectors import analytics
from jobs.selectors.analytics import FINISHED
from jobs.teams import access
from jobs.teams.selectors import team_get_visible


def batches_visible_to(user, action: str = "view") -> QuerySet[Batch]:
    """The batches `user` may `action` (Batch.objects.visible_to); None (the system, commands
    run by an operator of the machine): all."""
    if user is None:
        return Batch.objects.all()
    return Batch.objects.visible_to(user, action)


# What a progress read shows (ProgressOut: counters, percent, ETA): loading only these columns,
# without the owner, halves the cost of the hottest read a script makes.
PROGRESS_FIELDS = (
    "id", "status", "total", "pending", "running", "completed", "failed", "skipped",
    "current_operation", "rate_at", "rate_done", "rate_prev_at", "rate_prev_done",
)  # fmt: skip


def batch_get_visible(user, batch_id: Any, action: str = "view", *, only: tuple[str, ...] = ()) -> Batch:
    """The batch with this id, its owner and team loaded, if `user` may see it and `action` it.

    `only`: load just these fields (PROGRESS_FIELDS), and not the owner.

    The one access check of pages, API, consumers, exports and artifacts. Raises BatchNotFound (an
    Http404, so pages and the API answer 404 by themselves) for an unknown or malformed id and for
    a batch the user may not see alike: nobody learns which batches exist. A batch they may see
    but not `action` (`operate`, `manage`: a team role too low) is a PermissionDenied (a 403 that
    says which role it takes).
    """
    try:
        pk = batch_id if isinstance(batch_id, uuid.UUID) else uuid.UUID(str(batch_id))
    except ValueError:
        raise BatchNotFound() from None
    found = batches_visible_to(user).filter(pk=pk)
    found = found.only(*only) if only else found.select_related("owner", "team")
    # A slice, not first(): there is at most one row, and first() would add an ORDER BY.
    batch = next(iter(found[:1]), None)
    if batch is None:
        raise BatchNotFound()
    if user is not None and action != "view":
        access.require(user, action, batch)
    return batch


def batch_find(reference: str, user=None) -> Batch:
    """A batch by full id or by its short id (a prefix of 4 to 8 hex digits, as lists show it).

    Raises Batch.DoesNotExist (also for another user's batch) or Batch.MultipleObjectsReturned.
    """
    batches = batches_visible_to(user)
    reference = reference.strip().lower()
    try:
        pk = uuid.UUID(reference)
    except ValueError:
        pass
    else:
        batch = batches.filter(pk=pk).first()
        if batch is None:  # never was, deleted, or another user's: the same answer
            raise Batch.DoesNotExist(f"No batch {reference!r}.")
        return batch
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


def batches_to_prune_by_owner(*, days: int) -> dict[str, int]:
    """What `services.batch_prune(days=days)` would delete: finished batches whose finished_at is
    older than `days` days, counted by owner's username (largest first)."""
    cutoff = timezone.now() - timedelta(days=days)
    rows = (
        Batch.objects.filter(status__in=TERMINAL_STATUSES, finished_at__lt=cutoff)
        .values("owner__username")
        .annotate(count=Count("id"))
        .order_by("-count", "owner__username")
    )
    return {row["owner__username"]: row["count"] for row in rows}


def parse_moment(value: str, field: str, end_of_day: bool) -> datetime:
    """An ISO datetime, or a date meaning the start of that day (or the end of it for `before`)."""
    try:
        day = parse_date(value)
        moment = None if day else parse_datetime(value)
    except ValueError:  # well-formed but impossible, like 2024-13-45
        day = moment = None
    if day is None and moment is None:
        raise InvalidInput({field: [f"Expected an ISO date or datetime, got {value!r}."]})
    try:
        if day is not None:
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
        assert moment is not None
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        # In UTC: PostgreSQL refuses offsets past ±15:59 ("+17:11"), which ISO 8601 allows.
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):  # 9999-12-31 as an end of day, year 1 west of UTC
        raise InvalidInput({field: [f"Out of the supported range of dates: {value!r}."]}) from None


def batch_search(
    user,
    *,
    status: str | None = None,
    type: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    text: str | None = None,
    instance: str | None = None,
    team: str | None = None,
) -> QuerySet[Batch]:
    """History filters of pages and API; dates are inclusive (a `created_before` date covers that day).
    `instance`: batches with an operation against that database instance. `team`: a team's slug or
    id (TeamNotFound, a 404, for one the user is not in), or `me` for the user's own batches outside
    any team."""
    batches = batches_visible_to(user)
    if team == "me":
        batches = batches.filter(team__isnull=True, owner=user)
    elif team:
        batches = batches.filter(team=team_get_visible(user, team))
    if status:
        batches = batches.filter(status=status)
    if type is not None:
        if type not in {optype.key for optype in all_types()}:
            raise InvalidInput({"type": [f"Unknown operation type {type!r}."]})
        batches = batches.filter(type=type)
    # An empty date is an error, not "no filter": fronts pass None for a filter left out.
    if created_after is not None:
        batches = batches.filter(created_at__gte=parse_moment(created_after, "created_after", False))
    if created_before is not None:
        before = parse_moment(created_before, "created_before", True)
        batches = (
            batches.filter(created_at__lt=before)
            if "T" not in created_before
            else batches.filter(created_at__lte=before)
        )
    if text:
        batches = batches.filter(Q(name__icontains=text) | Q(description__icontains=text))
    if instance:
        batches = batches.filter(Exists(Operation.objects.filter(batch=OuterRef("pk"), resource=instance)))
    return batches


# --- results ------------------------------------------------------------------------------------


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
    (completed + failed + partial success + expired); cancelled ones are a person's choice, not an
    outcome): a few grouped counts, cheap enough for every dashboard refresh."""
    batches = batches_visible_to(user)
    by_status = {row["status"]: row["n"] for row in batches.values("status").annotate(n=Count("id")).order_by()}
    by_type = {row["type"]: row["n"] for row in batches.values("type").annotate(n=Count("id")).order_by()}
    finished = sum(
        by_status.get(s, 0)
        for s in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.PARTIAL_SUCCESS, BatchStatus.EXPIRED)
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
        "params_schema": optype.params_schema(),
    }


def dashboard_context(user) -> dict:
    """What the dashboard shows: active batches first, then the recently finished, and totals.
    The page and its WebSocket consumer both render from this."""
    visible = batches_visible_to(user).select_related("owner")
    stats = batch_totals(user)
    stats["active"] = sum(stats["by_status"].get(s, 0) for s in (*NOT_STARTED_STATUSES, *ACTIVE_STATUSES))
    return {
        "active": list(visible.filter(status__in=(*NOT_STARTED_STATUSES, *ACTIVE_STATUSES))[:20]),
        "recent": list(visible.filter(status__in=TERMINAL_STATUSES).order_by("-finished_at")[:10]),
        "stats": stats,
    }


OPERATIONS_PER_PAGE = 50


def operations_page(batch: Batch, *, status: str = "", page: str | int | None = None, error_type: str = ""):
    """One page of a batch's operations (by seq), optionally of one status and one error type (an
    error group's link); the page and its WebSocket consumer use the same pages, so the consumer
    knows which rows the page shows."""
    operations = batch.operations.all()
    if status in OperationStatus.values:
        operations = operations.filter(status=status)
    if error_type:
        operations = operations.filter(error_type=error_type[:100])
    return Paginator(operations, OPERATIONS_PER_PAGE).get_page(page)


CHAIN_LIMIT = 20


def batch_chain(user, batch: Batch) -> list[Batch]:
    """The chain `batch` belongs to, as `user` may see it, in order: the batches it waits for
    (oldest first), itself, then the batches waiting for it and for those (breadth first). Empty
    when it is in no chain. Bounded, and safe against a cycle a database edit could make."""
    visible = batches_visible_to(user)
    before: list[Batch] = []
    seen = {batch.pk}
    current = batch
    while current.after_id and current.after_id not in seen and len(before) < CHAIN_LIMIT:
        found = visible.filter(pk=current.after_id).first()
        if found is None:
            break
        seen.add(found.pk)
        before.insert(0, found)
        current = found
    after: list[Batch] = []
    frontier = [batch.pk]
    while frontier and len(after) < CHAIN_LIMIT:
        found_next = [b for b in visible.filter(after_id__in=frontier).order_by("created_at") if b.pk not in seen]
        seen.update(b.pk for b in found_next)
        after += found_next
        frontier = [b.pk for b in found_next]
    if not before and not after:
        return []
    return [*before, batch, *after][: 2 * CHAIN_LIMIT + 1]


def batches_to_wait_for(user, limit: int = 50) -> list[Batch]:
    """The create page's choices for `after`: the most recent batches the user may see."""
    return list(batches_visible_to(user).order_by("-created_at")[:limit])
