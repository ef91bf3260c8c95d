"""Read-side fixtures for analytics, exports and charts: batches whose operations are written
directly with fixed durations, errors, scores and times (the write path is tested elsewhere)."""

from datetime import UTC, datetime, timedelta

from jobs.models import Batch, Operation, OperationStatus, ResultRow

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_batch(owner, name: str = "analysed") -> Batch:
    return Batch.objects.create(owner=owner, name=name, type="noop")


def add_operations(batch: Batch, specs: list[dict]) -> list[Operation]:
    """One operation per spec (status, duration_ms, error, error_type, quality_score, started_at,
    finished_at, label); counters on the batch set to match."""
    operations = []
    for seq, spec in enumerate(specs, start=1):
        spec = dict(spec)
        spec.setdefault("label", f"op-{seq}")
        spec.setdefault("status", OperationStatus.COMPLETED)
        operations.append(Operation(batch=batch, seq=seq, attempts=1, **spec))
    Operation.objects.bulk_create(operations, batch_size=500)
    counts = {status: 0 for status in OperationStatus.values}
    for operation in Operation.objects.filter(batch=batch):
        counts[operation.status] += 1
    Batch.objects.filter(pk=batch.pk).update(total=sum(counts.values()), **counts)
    batch.refresh_from_db()
    return list(Operation.objects.filter(batch=batch).order_by("seq"))


def add_rows(batch: Batch, operation: Operation, rows: list[dict]) -> None:
    ResultRow.objects.bulk_create([ResultRow(batch=batch, operation=operation, data=row) for row in rows])


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)
