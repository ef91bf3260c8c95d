"""Checks of the invariants every batch keeps (exact counters, one terminal state), shared by the test modules."""

from django.db.models import Count

from jobs.models import Batch, BatchEvent, OperationStatus


def assert_counters_match_rows(batch: Batch) -> None:
    """Invariant 1: total == sum of status counters == COUNT over the operations."""
    batch.refresh_from_db()
    rows = dict(batch.operations.values_list("status").annotate(n=Count("id")).order_by())
    counters = {status: getattr(batch, status) for status in OperationStatus.values}
    assert counters == {status: rows.get(status, 0) for status in OperationStatus.values}, (counters, rows)
    assert batch.total == sum(counters.values()) == batch.operations.count()


def finished_events(batch: Batch) -> int:
    return BatchEvent.objects.filter(batch=batch, kind="finished").count()
