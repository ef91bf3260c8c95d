"""The engine's transitions: claim an operation, record its outcome, recover it when its worker is lost."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F, Min
from django.utils import timezone

from jobs.live import publisher
from jobs.models import (
    ACTIVE_STATUSES,
    Batch,
    BatchEventKind,
    BatchStatus,
    Operation,
    OperationStatus,
    ResultRow,
)
from jobs.services import rawsql
from jobs.services.transitions import (
    CREATE_CHUNK,
    cancel_outside_work_on_commit,
    finalize_if_done,
    locked_batch,
    record_event,
    skip_pending,
    update_batch,
)

WORKER_LOST = "WorkerLost"


# --- the engine's transitions -----------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """An operation handed to one lane for one attempt."""

    batch_id: str
    operation_id: int
    attempt: int
    seq: int
    label: str
    type: str
    params: dict[str, Any]
    timeout_s: int
    # What the operation saved when it last rescheduled itself (None if it never did), and when its
    # work began: the first claim of an operation that waits spans all its later runs.
    state: dict[str, Any] | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class NoClaim:
    """Why nothing was claimed: gone, inactive, full, empty, or not_due (then `next_due`)."""

    reason: str
    next_due: datetime | None = None


def operation_claim_next(*, batch_id: str, worker: str) -> Claim | NoClaim:
    """Claim the next due pending operation, never exceeding max_parallel running operations.

    Exactly one lane gets each attempt: the batch row is locked while the operation is taken.
    """
    with locked_batch(batch_id, missing_ok=True) as batch:
        if batch is None:
            return NoClaim("gone")
        return _claim_locked(batch, worker, timezone.now())


@dataclass(frozen=True)
class Recorded:
    """The answer to an outcome report: whether this attempt's outcome counted and, when the lane
    asked for it, its next claim (taken in the same transaction, saving one per operation)."""

    accepted: bool
    next: Claim | NoClaim | None = None

    def __bool__(self) -> bool:
        return self.accepted


def operation_complete(
    *,
    claim: Claim,
    duration_ms: int,
    result: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] = (),
    quality_score: float | None = None,
    then_claim_for: str = "",
) -> Recorded:
    """Record success of this attempt; not accepted (nothing written) if the attempt is no longer
    current. With `then_claim_for` (a worker name), also claim the next operation."""
    with locked_batch(claim.batch_id, missing_ok=True) as batch:
        if batch is None:
            return Recorded(False, NoClaim("gone"))
        now = timezone.now()
        updated = rawsql.update(
            Operation,
            where=_attempt_fence(claim),
            values={
                "status": OperationStatus.COMPLETED,
                "result": result,
                "error": "",
                "error_type": "",
                "duration_ms": duration_ms,
                "quality_score": quality_score,
                "finished_at": now,
            },
        )
        if updated == 1:
            if rows:
                ResultRow.objects.bulk_create(
                    (ResultRow(batch_id=batch.pk, operation_id=claim.operation_id, data=row) for row in rows),
                    batch_size=CREATE_CHUNK,
                )
            update_batch(batch, running=-1, completed=+1, duration_total_ms=+duration_ms, duration_count=+1)
            finished = finalize_if_done(batch, now)
            publisher.batch_changed(batch, status_changed=finished)
        return Recorded(updated == 1, _claim_locked(batch, then_claim_for, now) if then_claim_for else None)


def operation_fail(
    *,
    claim: Claim,
    error: str,
    error_type: str,
    duration_ms: int,
    retryable: bool = True,
    then_claim_for: str = "",
) -> Recorded:
    """Record a failed attempt: back to pending with backoff while automatic retries are left,
    else failed (and, with stop_on_error, the rest skipped). Not accepted if the attempt is not
    current. With `then_claim_for`, also claim the next operation."""
    with locked_batch(claim.batch_id, missing_ok=True) as batch:
        if batch is None:
            return Recorded(False, NoClaim("gone"))
        now = timezone.now()
        operation = _current_attempt(claim).first()
        if operation is not None:
            _record_failure(batch, operation, now, error, error_type, duration_ms, retryable)
        return Recorded(operation is not None, _claim_locked(batch, then_claim_for, now) if then_claim_for else None)


def operation_reschedule(
    *,
    claim: Claim,
    after_s: float,
    state: dict[str, Any],
    then_claim_for: str = "",
) -> Recorded:
    """The operation waits for outside work (an external job it polls): back to pending, due
    again in `after_s` seconds, with `state` handed to its next run. Neither a failure nor a
    finished attempt: no automatic retry is used and no duration is counted. The next claim is a
    new attempt number, so the fence stays exact. Not accepted if the attempt is not current."""
    with locked_batch(claim.batch_id, missing_ok=True) as batch:
        if batch is None:
            return Recorded(False, NoClaim("gone"))
        now = timezone.now()
        updated = rawsql.update(
            Operation,
            where=_attempt_fence(claim),
            values={
                "status": OperationStatus.PENDING,
                "not_before": now + timedelta(seconds=after_s),
                "state": state,
            },
        )
        if updated == 1:
            # The lane that reported this sees "not due" if nothing else is, and schedules its
            # successor for then.
            update_batch(batch, running=-1, pending=+1)
            publisher.batch_changed(batch)
        return Recorded(updated == 1, _claim_locked(batch, then_claim_for, now) if then_claim_for else None)


def _claim_locked(batch: Batch, worker: str, now: datetime) -> Claim | NoClaim:
    if batch.status not in (BatchStatus.QUEUED, BatchStatus.RUNNING):
        return NoClaim("inactive")
    if batch.pending == 0:
        return NoClaim("empty")
    if batch.running >= batch.max_parallel:
        return NoClaim("full")
    found = rawsql.select_for_update(
        Operation,
        "WHERE {batch} = %s AND {status} = %s AND ({not_before} IS NULL OR {not_before} <= %s) ORDER BY {seq} LIMIT 1",
        [
            rawsql.prep(Operation, "batch", batch.pk),
            OperationStatus.PENDING.value,
            rawsql.prep(Operation, "not_before", now),
        ],
        skip_locked=True,
    )
    operation = found[0] if found else None
    if operation is None:
        next_due = batch.operations.filter(status=OperationStatus.PENDING).aggregate(at=Min("not_before"))["at"]
        return NoClaim("not_due", next_due)
    # An operation resuming outside work it started earlier keeps its start.
    started_at = operation.started_at if operation.state is not None and operation.started_at else now
    claimed = rawsql.update(
        Operation,
        where={"pk": operation.pk, "status": OperationStatus.PENDING},
        values={
            "status": OperationStatus.RUNNING,
            "started_at": started_at,
            "heartbeat_at": now,
            "finished_at": None,
            "not_before": None,
            "worker": worker[:200],
        },
        increments={"attempts": 1},
    )
    if claimed != 1:
        return NoClaim("full")
    started = batch.status == BatchStatus.QUEUED
    changes: dict[str, Any] = {"current_operation": operation.label}
    if started:
        changes["status"] = BatchStatus.RUNNING
        if batch.started_at is None:
            changes["started_at"] = now
            record_event(batch, BatchEventKind.STARTED, None, "")
    update_batch(batch, pending=-1, running=+1, **changes)
    publisher.batch_changed(batch, status_changed=started)
    return Claim(
        batch_id=str(batch.pk),
        operation_id=operation.pk,
        attempt=operation.attempts + 1,
        seq=operation.seq,
        label=operation.label,
        type=batch.type,
        params={**batch.params, **operation.params},
        timeout_s=batch.timeout_s,
        state=operation.state,
        started_at=started_at,
    )


def _record_failure(batch, operation, now, error, error_type, duration_ms, retryable) -> None:
    error = (error or error_type or "failed")[:10_000]
    common = {"error": error, "error_type": error_type[:100], "duration_ms": duration_ms}
    timing = {"duration_total_ms": +(duration_ms or 0), "duration_count": +1 if duration_ms is not None else 0}
    if retryable and operation.auto_retries < batch.max_retries:
        delay = batch.retry_backoff_s * (2**operation.auto_retries)
        Operation.objects.filter(pk=operation.pk).update(
            status=OperationStatus.PENDING,
            auto_retries=F("auto_retries") + 1,
            not_before=now + timedelta(seconds=delay),
            **common,
        )
        # The lane that reported this sees "not due" and schedules its successor for then.
        update_batch(batch, running=-1, pending=+1, **timing)
        publisher.batch_changed(batch)
        return
    Operation.objects.filter(pk=operation.pk).update(status=OperationStatus.FAILED, finished_at=now, **common)
    update_batch(batch, running=-1, failed=+1, **timing)
    # The message starts with "#<seq> ": readers of the outbox (notifications) find the operation by it.
    record_event(
        batch, BatchEventKind.OPERATION_FAILED_FINAL, None, f"#{operation.seq} {operation.label}: {error_type or error}"
    )
    if batch.stop_on_error and batch.pending and batch.status in ACTIVE_STATUSES:
        cancel_outside_work_on_commit(batch, (OperationStatus.PENDING,))
        skipped = skip_pending(batch, now, "Skipped: the batch stopped on error.")
        record_event(
            batch,
            BatchEventKind.STOPPED,
            None,
            f"Stopped after #{operation.seq} {operation.label} failed; {skipped} skipped",
        )
    finished = finalize_if_done(batch, now)
    publisher.batch_changed(batch, status_changed=finished)


def operation_heartbeat(*, operation_ids: list[int]) -> None:
    """Mark running operations as alive; no counters change, so no batch lock is needed."""
    if operation_ids:
        Operation.objects.filter(pk__in=operation_ids, status=OperationStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )


def operation_recover_lost(*, operation_id: int, stale_before: datetime) -> bool:
    """A running operation whose worker stopped heartbeating: pending again if automatic retries
    are left, else failed with "worker lost". False if it turned out alive or already moved on."""
    batch_id = Operation.objects.filter(pk=operation_id).values_list("batch_id", flat=True).first()
    if batch_id is None:
        return False
    with locked_batch(batch_id, missing_ok=True) as batch:
        if batch is None:
            return False
        now = timezone.now()
        operation = Operation.objects.filter(
            pk=operation_id, status=OperationStatus.RUNNING, heartbeat_at__lt=stale_before
        ).first()
        if operation is None:
            return False
        record_event(batch, BatchEventKind.REAPED, None, f"#{operation.seq} {operation.label}: worker lost")
        _record_failure(
            batch,
            operation,
            now,
            f"worker lost: no heartbeat from {operation.worker or 'its worker'} since "
            f"{operation.heartbeat_at:%H:%M:%S}",
            WORKER_LOST,
            None,
            retryable=True,
        )
    return True


def _attempt_fence(claim: Claim) -> dict[str, Any]:
    """The claimed operation, only while this attempt is still the running one (the fence)."""
    return {"pk": claim.operation_id, "status": OperationStatus.RUNNING, "attempts": claim.attempt}


def _current_attempt(claim: Claim):
    return Operation.objects.filter(**_attempt_fence(claim))
