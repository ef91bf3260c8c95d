"""The machinery every transition of a batch or an operation shares.

Rules every function here keeps:
- One transaction per transition. It locks the batch row first (`lock_batch`), then touches
  operations: one lock order everywhere, so concurrent transitions queue instead of deadlocking.
  On SQLite the IMMEDIATE transaction mode gives the same serialisation. Transitions that touch
  several batches of a chain lock a batch before the batches waiting for it, never the other way.
- Operation transitions are conditional updates (`status=running, attempts=N`), so an outcome
  reported twice, or by a worker whose attempt was already reaped or cancelled, changes nothing.
- Counters change in the same transaction as the rows they count.
- Events reach the channel layer after commit (jobs.events), lanes are enqueued after commit.
"""

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from jobs.audit import recorder as audit
from jobs.engine import dispatch
from jobs.errors import REDIS_ERRORS, IllegalTransition, InvalidInput
from jobs.live import publisher
from jobs.models import (
    ACTIVE_STATUSES,
    AFTER_CONDITION_STATUSES,
    TERMINAL_STATUSES,
    AttemptOutcome,
    Batch,
    BatchEvent,
    BatchEventKind,
    BatchStatus,
    OperationAttempt,
    OperationStatus,
)
from jobs.optypes import get_type
from jobs.services import rawsql

logger = logging.getLogger(__name__)

CREATE_CHUNK = 2000


# ----------------------------------------------------------------------------------


def lock_batch(batch_id, *, missing_ok: bool = False) -> Batch | None:
    pk = batch_id if isinstance(batch_id, uuid.UUID) else uuid.UUID(str(batch_id))
    rows = rawsql.select_for_update(Batch, "WHERE {id} = %s", [rawsql.prep(Batch, "pk", pk)])
    batch = rows[0] if rows else None
    if batch is None and not missing_ok:
        raise Batch.DoesNotExist(f"batch {batch_id} does not exist")
    return batch


def require_status(batch: Batch, allowed: tuple, action: str) -> None:
    if batch.status not in allowed:
        raise IllegalTransition(f"Cannot {action} a {batch.get_status_display().lower()} batch.", batch.status)


COUNTERS = frozenset(
    ("total", "pending", "running", "completed", "failed", "skipped", "duration_total_ms", "duration_count")
)


@contextmanager
def locked_batch_or_none(batch_id) -> Iterator[Batch | None]:
    """One transition: a transaction holding the batch row's lock (None when the batch is gone);
    the changes `update_batch` collected are written as a single UPDATE when the block ends
    without an error."""
    with transaction.atomic():
        batch = lock_batch(batch_id, missing_ok=True)
        yield batch
        if batch is not None:
            flush_batch(batch)


@contextmanager
def locked_batch(batch_id) -> Iterator[Batch]:
    """As locked_batch_or_none, for a batch that must exist (Batch.DoesNotExist otherwise)."""
    with locked_batch_or_none(batch_id) as batch:
        if batch is None:
            raise Batch.DoesNotExist(f"batch {batch_id} does not exist")
        yield batch


def update_batch(batch: Batch, **changes: Any) -> None:
    """Apply counter deltas (ints for counter fields) and plain assignments to the instance now
    and to the row at the end of the transition; the caller holds the batch lock, so the instance
    stays equal to the row. One transition bumps `version` once."""
    if "_deltas" not in batch.__dict__:
        batch.__dict__["_deltas"], batch.__dict__["_values"] = {}, {}
        batch.version += 1
    deltas, values = batch.__dict__["_deltas"], batch.__dict__["_values"]
    for field, value in changes.items():
        if field in COUNTERS:
            deltas[field] = deltas.get(field, 0) + value
            setattr(batch, field, getattr(batch, field) + value)
        else:
            values[field] = value
            setattr(batch, field, value)


def add_attempts(batch: Batch, rows: list[tuple[Any, ...]]) -> None:
    """Attempt records (values of ATTEMPT_COLUMNS) written with the transition's batch update,
    in the same statement where the database allows it (rawsql.update's insert_first)."""
    pending = batch.__dict__.setdefault("_attempts", rawsql.Insert(OperationAttempt, ATTEMPT_COLUMNS))
    pending.rows.extend(rows)


def flush_batch(batch: Batch) -> None:
    deltas = batch.__dict__.pop("_deltas", None)
    values = batch.__dict__.pop("_values", None)
    attempts = batch.__dict__.pop("_attempts", None)
    if deltas is None:
        if attempts is not None:
            rawsql.insert_rows(attempts.model, attempts.names, attempts.rows)
        return
    increments = {field: delta for field, delta in deltas.items() if delta}
    increments["version"] = 1
    rawsql.update(Batch, where={"pk": batch.pk}, values=values, increments=increments, insert_first=attempts)


def skip_pending(batch: Batch, now: datetime, reason: str) -> int:
    skipped = batch.operations.filter(status=OperationStatus.PENDING).update(
        status=OperationStatus.SKIPPED, error=reason, error_type="Skipped", finished_at=now
    )
    update_batch(batch, pending=-skipped, skipped=+skipped)
    return skipped


# The columns of an OperationAttempt row as the hot path writes it (add_attempts).
ATTEMPT_COLUMNS = (
    "batch",
    "operation",
    "number",
    "worker",
    "started_at",
    "finished_at",
    "duration_ms",
    "outcome",
    "error_type",
    "error",
    "traceback",
    "progress_done",
    "progress_total",
    "progress_note",
    "log",
)


def record_cancelled_attempts(batch: Batch, now: datetime, reason: str, **operation_filter: Any) -> None:
    """The attempt records of running operations a person stops (call it before they are marked
    skipped): the run ended cancelled, whatever its worker reports later (fenced out)."""
    running = batch.operations.filter(status=OperationStatus.RUNNING, **operation_filter).values_list(
        "pk", "attempts", "worker", "started_at", "state", "progress_done", "progress_total", "progress_note", "log"
    )
    OperationAttempt.objects.bulk_create(
        (
            OperationAttempt(
                batch=batch,
                operation_id=pk,
                number=attempts,
                worker=worker,
                # An operation waiting on outside work keeps its first start; this run's is unknown.
                started_at=started_at if state is None else None,
                finished_at=now,
                duration_ms=int((now - started_at).total_seconds() * 1000) if started_at and state is None else None,
                outcome=AttemptOutcome.CANCELLED,
                error_type="Cancelled",
                error=reason,
                # What the run had reported when it was stopped.
                progress_done=done,
                progress_total=total,
                progress_note=note,
                log=log,
            )
            for pk, attempts, worker, started_at, state, done, total, note, log in running.iterator(CREATE_CHUNK)
        ),
        batch_size=CREATE_CHUNK,
    )


def finalize_if_done(batch: Batch, now: datetime) -> bool:
    """The terminal status, set exactly once: when an active batch has nothing pending or running.
    A draining cancel ends `cancelled` here, once its last running operation ended."""
    if batch.status not in ACTIVE_STATUSES or batch.pending or batch.running:
        return False
    if batch.status == BatchStatus.CANCELLING:
        update_batch(batch, status=BatchStatus.CANCELLED, finished_at=now, current_operation="")
        record_event(
            batch,
            BatchEventKind.CANCELLED,
            batch.cancelled_by,
            f"Drained: {batch.completed} completed, {batch.failed} failed, {batch.skipped} skipped",
        )
        release_dependents(batch, now)
        return True
    if batch.completed == batch.total:
        status = BatchStatus.COMPLETED
    elif batch.completed == 0:
        status = BatchStatus.FAILED
    else:
        status = BatchStatus.PARTIAL_SUCCESS
    update_batch(batch, status=status, finished_at=now, current_operation="")
    record_event(
        batch,
        BatchEventKind.FINISHED,
        None,
        f"{status.label}: {batch.completed} completed, {batch.failed} failed, {batch.skipped} skipped",
    )
    release_dependents(batch, now)
    return True


# --- starting, expiring, chains -----------------------------------------------------------------


def start_locked(batch: Batch, now: datetime) -> None:
    """pending or waiting → queued, its deadline counted from now, lanes enqueued after commit."""
    changes: dict[str, Any] = {"status": BatchStatus.QUEUED}
    if batch.deadline_s:
        changes["deadline_at"] = now + timedelta(seconds=batch.deadline_s)
    update_batch(batch, **changes)
    publisher.batch_changed(batch, status_changed=True)
    enqueue_lanes_on_commit(batch, min(batch.max_parallel, batch.pending))


def stop_running(batch: Batch, now: datetime, error: str, error_type: str) -> int:
    """Running operations to skipped (their late outcomes are fenced out) and their workers told
    to stop them after commit; each stopped run gets its attempt record."""
    record_cancelled_attempts(batch, now, error)
    stopped = batch.operations.filter(status=OperationStatus.RUNNING).update(
        status=OperationStatus.SKIPPED, error=error, error_type=error_type, finished_at=now
    )
    update_batch(batch, running=-stopped, skipped=+stopped)
    if stopped:
        batch_id = str(batch.pk)
        redis_on_commit(lambda: dispatch.request_stop(batch_id), f"the stop signal of batch {batch_id}")
    return stopped


def expire_if_due(batch: Batch, now: datetime) -> bool:
    """A batch whose deadline passed ends `expired`: pending operations skipped, running ones
    stopped, what finished is kept. The caller holds the lock and publishes."""
    if batch.deadline_at is None or now < batch.deadline_at or batch.status not in ACTIVE_STATUSES:
        return False
    cancel_outside_work_on_commit(batch, (OperationStatus.RUNNING, OperationStatus.PENDING))
    stop_running(batch, now, "Stopped: the batch's deadline passed while it ran.", "Expired")
    skip_pending(batch, now, "Skipped: the batch's deadline passed.")
    update_batch(batch, status=BatchStatus.EXPIRED, finished_at=now, current_operation="")
    record_event(
        batch,
        BatchEventKind.EXPIRED,
        None,
        f"Deadline of {batch.deadline_s} s passed: {batch.completed} completed, {batch.failed} failed, "
        f"{batch.skipped} skipped",
    )
    release_dependents(batch, now)
    return True


def release_dependents(batch: Batch, now: datetime) -> None:
    """`batch` (locked) just ended: each batch waiting for it starts if its condition holds, else
    ends cancelled with the reason, and so on down its own chain. Locks go from a batch to its
    dependents, the order every chain transition takes, and no chain has a cycle."""
    if batch.status not in TERMINAL_STATUSES:
        return
    waiting = list(
        Batch.objects.filter(after_id=batch.pk, status=BatchStatus.WAITING)
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    for pk in waiting:
        dependent = lock_batch(pk, missing_ok=True)
        if dependent is None or dependent.status != BatchStatus.WAITING:
            continue
        resolve_waiting(dependent, batch, now)
        flush_batch(dependent)


def resolve_waiting(dependent: Batch, predecessor: Batch | None, now: datetime) -> None:
    """Start a waiting batch (locked) whose predecessor ended as its condition asks, or cancel it
    when that can no longer happen (the predecessor ended otherwise, or was deleted)."""
    if predecessor is not None and predecessor.status not in TERMINAL_STATUSES:
        return
    if predecessor is not None and predecessor.status in AFTER_CONDITION_STATUSES[dependent.after_condition]:
        record_event(
            dependent,
            BatchEventKind.UNBLOCKED,
            None,
            f"{predecessor.name} ({predecessor.short_id}) ended {predecessor.status}; starting",
        )
        start_locked(dependent, now)
        return
    if predecessor is None:
        reason = "Not started: the batch it waited for was deleted."
    else:
        reason = (
            f"Not started: {predecessor.name} ({predecessor.short_id}) ended {predecessor.status}, "
            f"and this batch waited for it to end {dependent.after_condition}."
        )
    skip_pending(dependent, now, "Skipped: the batch never started.")
    update_batch(dependent, status=BatchStatus.CANCELLED, finished_at=now, cancel_reason=reason[:500])
    record_event(dependent, BatchEventKind.CANCELLED, None, reason)
    publisher.batch_changed(dependent, status_changed=True)
    release_dependents(dependent, now)


# The timeline's entries that are someone's action, audited with it in the same transaction (the
# engine's own steps, started, finished, reaped, are the timeline's alone).
AUDITED_KINDS: dict[str, str] = {
    BatchEventKind.CREATED: "batch.create",
    BatchEventKind.PAUSED: "batch.pause",
    BatchEventKind.RESUMED: "batch.resume",
    BatchEventKind.CANCELLED: "batch.cancel",
    BatchEventKind.CANCELLING: "batch.cancel",
    BatchEventKind.RETRIED: "batch.retry",
    BatchEventKind.EXTENDED: "batch.add_items",
    BatchEventKind.OPERATION_CANCELLED: "operation.cancel",
}


def record_event(batch: Batch, kind: str, actor, message: str) -> None:
    BatchEvent.objects.create(batch=batch, kind=kind, actor=actor, message=message[:500])
    if kind in AUDITED_KINDS:
        audit.record(action=AUDITED_KINDS[kind], obj=batch, actor=actor, summary=f"{batch.name}: {message}")


def cancel_outside_work_on_commit(batch: Batch, statuses: tuple) -> None:
    """Before operations in `statuses` are skipped: those that saved state were waiting on outside
    work (an external job); if their type can cancel it, a worker does so after commit. The calls
    go over the network, so they must not run under the batch lock or delay the transition."""
    try:
        optype = get_type(batch.type)
    except InvalidInput:
        return
    if optype.cancel is None:
        return
    waiting = list(
        batch.operations.filter(status__in=statuses, state__isnull=False).order_by().values_list("pk", flat=True)
    )
    if waiting:
        batch_id = str(batch.pk)
        redis_on_commit(
            lambda: dispatch.enqueue_outside_cancel(batch_id, waiting),
            f"cancelling the outside work of {len(waiting)} operation(s) of batch {batch_id}",
        )


def enqueue_lanes_on_commit(batch: Batch, count: int, *, lanes: bool = False) -> None:
    """After commit, lanes for `count` operations that may now run (dispatch.lanes_for), or
    `count` lanes exactly with `lanes=True`."""
    if count > 0:
        batch_id, priority = str(batch.pk), batch.priority

        def enqueue() -> None:
            dispatch.enqueue_lanes(batch_id, count=count if lanes else dispatch.lanes_for(count), priority=priority)

        # Lanes lost here are not lost for good: the reaper restarts the lanes of an active batch
        # with pending work and none, once Redis answers.
        redis_on_commit(enqueue, f"the lanes of batch {batch_id}")


def redis_on_commit(call: Callable[[], Any], what: str) -> None:
    """After commit, `call` (which talks to Redis). The change is committed by then: a Redis
    outage must not turn it into an error for the person who made it (and a retry into a second
    batch), so the failure is logged, naming what was left undone."""

    def run() -> None:
        try:
            call()
        except REDIS_ERRORS as exc:
            logger.warning("Redis does not answer (%s): %s is left undone for now", type(exc).__name__, what)

    transaction.on_commit(run)
