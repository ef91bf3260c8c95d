"""What a person does to one operation of a batch: retry it, cancel it.

Each is one transition under the batch's lock, like the batch-wide actions: the operation moves by
a conditional update, the counters by the same one-operation delta in the same transaction, and the
batch follows (a finished batch reopens for a retried operation; a batch whose last open
operation is cancelled finishes).
"""

from typing import Any

from django.utils import timezone

from jobs.engine import dispatch
from jobs.errors import IllegalTransition, OperationNotFound
from jobs.live import publisher
from jobs.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Batch,
    BatchEventKind,
    BatchStatus,
    Operation,
    OperationStatus,
    ResultRow,
)
from jobs.optypes import get_type
from jobs.services import rawsql
from jobs.services.batches import RATE_RESET
from jobs.services.transitions import (
    enqueue_lanes_on_commit,
    finalize_if_done,
    locked_batch,
    record_cancelled_attempts,
    record_event,
    redis_on_commit,
    require_status,
    update_batch,
)

RETRYABLE = (OperationStatus.FAILED, OperationStatus.SKIPPED)
CANCELLABLE = (OperationStatus.PENDING, OperationStatus.RUNNING)
COUNTER: dict[str, str] = {
    OperationStatus.PENDING: "pending",
    OperationStatus.RUNNING: "running",
    OperationStatus.FAILED: "failed",
    OperationStatus.SKIPPED: "skipped",
}


def _operation(batch: Batch, seq: int) -> Operation:
    operation = batch.operations.filter(seq=seq).first()
    if operation is None:
        raise OperationNotFound()
    return operation


def operation_retry(*, batch: Batch, seq: int, by=None) -> Operation:
    """A failed or skipped operation back to pending, afresh (no saved outside-work state, a new
    automatic-retry budget); its next run is a new attempt. A finished batch reopens (queued)."""
    with locked_batch(batch.pk) as locked:
        operation = _operation(locked, seq)
        require_status(locked, (*ACTIVE_STATUSES, *TERMINAL_STATUSES), "retry an operation of")
        if operation.status not in RETRYABLE:
            raise IllegalTransition(
                f"Only a failed or skipped operation can be retried; #{seq} is {operation.get_status_display().lower()}.",
                operation.status,
            )
        values: dict[str, Any] = {
            "status": OperationStatus.PENDING,
            "auto_retries": 0,
            "not_before": None,
            "finished_at": None,
            "result": None,
            "state": None,
            "error": "",
            "error_type": "",
            "duration_ms": None,
            "quality_score": None,
        }
        rawsql.update(Operation, where={"pk": operation.pk, "status": operation.status}, values=values)
        ResultRow.objects.filter(operation_id=operation.pk).delete()
        changes: dict[str, Any] = {}
        if locked.is_terminal:
            changes = {"status": BatchStatus.QUEUED, "finished_at": None, **RATE_RESET}
            if locked.status == BatchStatus.CANCELLED:
                changes.update(cancel_reason="", cancelled_by=None)
        update_batch(locked, **{COUNTER[operation.status]: -1}, pending=+1, **changes)
        record_event(locked, BatchEventKind.RETRIED, by, f"#{seq} {operation.label} retried")
        publisher.batch_changed(locked, status_changed=True)
        operation_id = operation.pk
        # A stop flag left by cancelling it must not stop its next attempt.
        redis_on_commit(
            lambda: dispatch.clear_operation_stop(operation_id), f"clearing the stop of operation {operation_id}"
        )
        if locked.status != BatchStatus.PAUSED:
            enqueue_lanes_on_commit(locked, min(locked.max_parallel - locked.running, locked.pending))
    operation.refresh_from_db()
    return operation


def operation_cancel(*, batch: Batch, seq: int, by=None) -> Operation:
    """A pending or running operation skipped; a running one is stopped in its worker (its late
    outcome is fenced out) and its attempt recorded as cancelled; outside work it waits on (an
    external job) is cancelled through its type after commit. The batch goes on, or finishes if
    nothing else is open."""
    with locked_batch(batch.pk) as locked:
        now = timezone.now()
        operation = _operation(locked, seq)
        require_status(locked, (BatchStatus.PENDING, *ACTIVE_STATUSES), "cancel an operation of")
        if operation.status not in CANCELLABLE:
            raise IllegalTransition(
                f"Only a pending or running operation can be cancelled; #{seq} is "
                f"{operation.get_status_display().lower()}.",
                operation.status,
            )
        running = operation.status == OperationStatus.RUNNING
        if running:
            record_cancelled_attempts(locked, now, "Cancelled while running.", pk=operation.pk)
        values = {
            "status": OperationStatus.SKIPPED,
            "error": "Cancelled while running." if running else "Cancelled.",
            "error_type": "Cancelled",
            "finished_at": now,
        }
        rawsql.update(Operation, where={"pk": operation.pk, "status": operation.status}, values=values)
        update_batch(locked, **{COUNTER[operation.status]: -1}, skipped=+1)
        record_event(locked, BatchEventKind.OPERATION_CANCELLED, by, f"#{seq} {operation.label} cancelled")
        _cancel_outside_work_on_commit(locked, operation)
        operation_id = operation.pk
        if running:
            redis_on_commit(
                lambda: dispatch.request_operation_stop(operation_id), f"the stop of operation {operation_id}"
            )
        finalize_if_done(locked, now)
        publisher.batch_changed(locked, status_changed=True)
    operation.refresh_from_db()
    return operation


def _cancel_outside_work_on_commit(batch: Batch, operation: Operation) -> None:
    """An operation that saved state was following outside work (an external job): its type's
    `cancel` stops it, from a worker after commit (network calls stay out of the lock)."""
    if operation.state is None or get_type(batch.type).cancel is None:
        return
    batch_id, operation_id = str(batch.pk), operation.pk
    redis_on_commit(
        lambda: dispatch.enqueue_outside_cancel(batch_id, [operation_id]),
        f"cancelling the outside work of operation {operation_id}",
    )
