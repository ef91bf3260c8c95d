"""Reads for pages, API and commands (writes live in jobs.services)."""

import uuid

from django.db.models import CharField, Count, QuerySet
from django.db.models.functions import Cast

from jobs.models import Batch, BatchStatus


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
