"""The engine's transitions: claim operations, record their outcomes, recover them when their worker
is lost. Claims and outcomes come in groups: one transaction, one lock of the batch row and one
counter update for many operations, so a batch's workers do not queue on its row once per operation.

Guarantees (SPEC §2), kept by every function here:
- A claim takes the batch row's lock, checks `running + n <= max_parallel` and moves n due pending
  operations to running with attempts + 1: max_parallel holds across every worker on every machine.
- An outcome counts only while its attempt is the running one (status running and the same
  attempts number, the fence), read under the batch lock; a late, doubled or reaped attempt's
  outcome changes nothing. The counters move by the sum of the accepted outcomes in the same
  transaction, so they equal a COUNT of the rows at every commit.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from jobs import metrics
from jobs.live import publisher
from jobs.models import (
    ACTIVE_STATUSES,
    AttemptOutcome,
    Batch,
    BatchEvent,
    BatchEventKind,
    BatchStatus,
    Operation,
    OperationStatus,
    ResultRow,
)
from jobs.services import instance_limits, limits, rawsql
from jobs.services.transitions import (
    CREATE_CHUNK,
    add_attempts,
    cancel_outside_work_on_commit,
    expire_if_due,
    finalize_if_done,
    locked_batch_or_none,
    record_event,
    skip_pending,
    update_batch,
)

WORKER_LOST = "WorkerLost"


@dataclass(frozen=True)
class Claim:
    """An operation handed to one worker for one attempt."""

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
    # Who claimed this attempt and when: the attempt's record (OperationAttempt) is written with
    # its outcome, in the same group insert, so the claim carries what the record needs.
    worker: str = ""
    claimed_at: datetime | None = None
    # The named limits this operation counts against (jobs.engine.limits holds them before it runs).
    limit_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoClaim:
    """Why nothing was claimed: gone, inactive, full, empty, or not_due (then `next_due`)."""

    reason: str
    next_due: datetime | None = None


@dataclass(frozen=True)
class Said:
    """What a running operation said of itself (jobs.engine.reports): progress and its log text."""

    done: float | None
    total: float | None
    note: str
    log: str


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: `completed` (result, rows, quality), `failed` (error; `retryable`
    says whether automatic retries may apply), `rescheduled` (due again in `after_s`, with
    `state` for the next run) or `released` (handed back unfinished by a worker that stops).
    `run_ms` is this run's own time (`duration_ms` of an operation waiting on outside work spans
    all its runs) and `traceback` the exception's, for the attempt's record."""

    claim: Claim
    kind: str
    duration_ms: int | None = None
    result: dict[str, Any] | None = None
    rows: Sequence[dict[str, Any]] = ()
    quality_score: float | None = None
    error: str = ""
    error_type: str = ""
    retryable: bool = True
    after_s: float = 0.0
    state: dict[str, Any] | None = None
    run_ms: int | None = None
    traceback: str = ""
    # What the run said of itself, written with its attempt.
    said: Said | None = None
    # `limited`: the named limit it waited for (it did not run; `error` says which, `after_s` how long).
    limit_key: str = ""


@dataclass(frozen=True)
class Recorded:
    """The answer to an outcome report: whether this attempt's outcome counted and, when the
    caller asked for it, its next claim (taken in the same transaction)."""

    accepted: bool
    next: Claim | NoClaim | None = None

    def __bool__(self) -> bool:
        return self.accepted


@dataclass
class GroupRecorded:
    """The answer to a group of outcomes: one accepted flag per outcome, in order, and the claims
    taken in the same transaction when asked for (a list, or why there were none)."""

    accepted: list[bool] = field(default_factory=list)
    claims: list[Claim] | NoClaim | None = None


# --- claims -----------------------------------------------------------------------------------


def operations_claim(*, batch_id: str, worker: str, limit: int) -> list[Claim] | NoClaim:
    """Claim up to `limit` due pending operations in sequence order, never more than the batch's
    max_parallel running at once. A list (never empty) or the reason there is nothing."""
    with locked_batch_or_none(batch_id) as batch:
        if batch is None:
            return NoClaim("gone")
        return _claim_locked(batch, worker, timezone.now(), limit)


def operation_claim_next(*, batch_id: str, worker: str) -> Claim | NoClaim:
    """Claim the next due pending operation (operations_claim of one)."""
    claims = operations_claim(batch_id=batch_id, worker=worker, limit=1)
    return claims[0] if isinstance(claims, list) else claims


def _next_due(batch: Batch) -> datetime | None:
    return batch.operations.filter(status=OperationStatus.PENDING).aggregate(at=Min("not_before"))["at"]


def _claim_locked(batch: Batch, worker: str, now: datetime, limit: int) -> list[Claim] | NoClaim:
    if batch.status not in (BatchStatus.QUEUED, BatchStatus.RUNNING):
        return NoClaim("inactive")
    if batch.deadline_at is not None and now >= batch.deadline_at:
        # Free here: the row is already read under its lock. The reaper expires idle batches.
        expire_if_due(batch, now)
        publisher.batch_changed(batch, status_changed=True)
        return NoClaim("inactive")
    if batch.pending == 0:
        return NoClaim("empty")
    room = min(limit, batch.max_parallel - batch.running)
    if room <= 0:
        return NoClaim("full")
    only = None
    if batch.instance_limited:
        only, full = instance_limits.choose(batch, now, room)
        if only == []:
            # Every due operation targets an instance at its max_connections: another batch's
            # operations hold them, and no outcome of ours will wake this worker, so look again soon.
            recheck = now + timedelta(seconds=settings.BATCHSITE_INSTANCE_RECHECK_S)
            return NoClaim("not_due", recheck) if full else NoClaim("not_due", _next_due(batch))
    found = rawsql.claim_due_operations(
        Operation, batch_pk=batch.pk, now=now, limit=room, worker=worker[:200], only=only
    )
    if not found:
        return NoClaim("not_due", _next_due(batch))
    started = batch.status == BatchStatus.QUEUED
    changes: dict[str, Any] = {"current_operation": found[-1]["label"]}
    if batch.waiting_for:
        changes["waiting_for"] = ""
    if started:
        changes["status"] = BatchStatus.RUNNING
        if batch.started_at is None:
            changes["started_at"] = now
            record_event(batch, BatchEventKind.STARTED, None, "")
    update_batch(batch, pending=-len(found), running=+len(found), **changes)
    publisher.batch_changed(batch, status_changed=started)
    _count_waits(batch, found, now)
    worker = worker[:200]
    return [
        Claim(
            batch_id=str(batch.pk),
            operation_id=operation["pk"],
            attempt=operation["attempts"],
            seq=operation["seq"],
            label=operation["label"],
            type=batch.type,
            params={**batch.params, **operation["params"]},
            timeout_s=batch.timeout_s,
            state=operation["state"],
            started_at=operation["started_at"],
            worker=worker,
            claimed_at=now,
            limit_keys=tuple(operation["limit_keys"]),
        )
        for operation in found
    ]


# --- outcomes ---------------------------------------------------------------------------------


def operations_record(
    *, batch_id: str, outcomes: Sequence[Outcome], claim_for: str = "", claim_limit: int = 0
) -> GroupRecorded:
    """Record the outcomes of one batch's attempts in one transaction; with `claim_for` (a worker
    name) and `claim_limit`, also claim up to that many next operations in it."""
    with locked_batch_or_none(batch_id) as batch:
        if batch is None:
            return GroupRecorded([False] * len(outcomes), NoClaim("gone") if claim_for else None)
        now = timezone.now()
        accepted = _record_locked(batch, outcomes, now)
        claims = _claim_locked(batch, claim_for, now, claim_limit) if claim_for and claim_limit > 0 else None
        return GroupRecorded(accepted, claims)


def _count_waits(batch: Batch, found: list[dict[str, Any]], now: datetime) -> None:
    """For the metrics: how long each operation claimed for its first attempt waited since its
    batch started (a batch's later operations wait for a free slot of its max_parallel)."""
    since = batch.started_at or now
    waits = [(now - since).total_seconds() for operation in found if operation["attempts"] <= 1]
    if waits:
        type_key = batch.type
        transaction.on_commit(lambda: metrics.count_waits(type_key, waits))


def _record_locked(batch: Batch, outcomes: Sequence[Outcome], now: datetime) -> list[bool]:
    ids = [outcome.claim.operation_id for outcome in outcomes]
    current = {
        row[0]: row[1:]
        for row in rawsql.select_values(
            Operation, ("pk", "attempts", "auto_retries", "seq", "label"), pks=ids, status=OperationStatus.RUNNING
        )
    }
    accepted: list[bool] = []
    attempts: list[tuple[Any, ...]] = []
    completed: list[tuple[Outcome, dict[str, Any]]] = []
    updates: list[tuple[int, dict[str, Any]]] = []
    failed: list[tuple[Outcome, int, str]] = []
    deltas = {"running": 0, "completed": 0, "pending": 0, "failed": 0, "duration_total_ms": 0, "duration_count": 0}
    waits: dict[str, tuple[datetime, str]] = {}
    for outcome in outcomes:
        claim = outcome.claim
        row = current.pop(claim.operation_id, None)  # popped: a doubled report counts once
        if row is None or row[0] != claim.attempt:
            accepted.append(False)
            continue
        accepted.append(True)
        deltas["running"] -= 1
        if outcome.kind == "limited":
            # Not run: a named limit is full. Pending again, no attempt spent, and the batch's other
            # operations under that limit wait as long, so they are not claimed only to wait too.
            until = now + timedelta(seconds=outcome.after_s)
            waiting = {"status": OperationStatus.PENDING, "not_before": until, "attempts": claim.attempt - 1}
            updates.append((claim.operation_id, waiting))
            deltas["pending"] += 1
            waits[outcome.limit_key] = (until, outcome.error)
            continue
        attempts.append(_attempt_values(batch, outcome, now))
        said = _said_values(outcome.said)
        if outcome.duration_ms is not None and outcome.kind in ("completed", "failed"):
            deltas["duration_total_ms"] += outcome.duration_ms
            deltas["duration_count"] += 1
        if outcome.kind == "completed":
            completed.append((outcome, {**_completed_values(outcome, now), **_said_values(outcome.said)}))
            deltas["completed"] += 1
        elif outcome.kind == "rescheduled":
            # Waiting on outside work: neither a failure nor a finished attempt; no retry is spent.
            values: dict[str, Any] = {"not_before": now + timedelta(seconds=outcome.after_s), "state": outcome.state}
            updates.append((claim.operation_id, {"status": OperationStatus.PENDING, **values, **said}))
            deltas["pending"] += 1
        elif outcome.kind == "released":
            # Handed back by a worker that stops: another runs it at once, as a new attempt.
            updates.append((claim.operation_id, {"status": OperationStatus.PENDING, "not_before": None, **said}))
            deltas["pending"] += 1
        else:
            error = (outcome.error or outcome.error_type or "failed")[:10_000]
            common: dict[str, Any] = {
                "error": error,
                "error_type": outcome.error_type[:100],
                "duration_ms": outcome.duration_ms,
            }
            auto_retries = row[1]
            # A draining cancel starts nothing new, automatic retries included.
            if outcome.retryable and auto_retries < batch.max_retries and batch.status != BatchStatus.CANCELLING:
                delay = batch.retry_backoff_s * (2**auto_retries)
                values = {"auto_retries": auto_retries + 1, "not_before": now + timedelta(seconds=delay), **common}
                updates.append((claim.operation_id, {"status": OperationStatus.PENDING, **values, **said}))
                deltas["pending"] += 1
            else:
                values = {"status": OperationStatus.FAILED, "finished_at": now, **common, **said}
                failed.append((outcome, row[2], row[3]))
                updates.append((claim.operation_id, values))
                deltas["failed"] += 1
    if not any(accepted):
        return accepted
    counted = [
        ("lost" if outcome.error_type == WORKER_LOST else outcome.kind, outcome.duration_ms)
        for outcome, taken in zip(outcomes, accepted, strict=True)
        if taken
    ]
    type_key = batch.type
    transaction.on_commit(lambda: metrics.count_attempts(type_key, counted))
    rawsql.update_each(Operation, [(outcome.claim.operation_id, values) for outcome, values in completed] + updates)
    rows = [
        ResultRow(batch_id=batch.pk, operation_id=outcome.claim.operation_id, data=data)
        for outcome, _ in completed
        for data in outcome.rows
    ]
    if rows:
        ResultRow.objects.bulk_create(rows, batch_size=CREATE_CHUNK)
    if attempts:
        add_attempts(batch, attempts)
    for key, (until, _) in waits.items():
        limits.postpone_waiters(batch, key, until)
    if waits:
        update_batch(batch, waiting_for=next(iter(waits.values()))[1][:300])
    update_batch(batch, **{name: delta for name, delta in deltas.items() if delta})
    if failed:
        # One event per operation failed for good (the notifications outbox reads them); the
        # message starts with "#<seq> " so readers find the operation.
        BatchEvent.objects.bulk_create(
            BatchEvent(
                batch=batch,
                kind=BatchEventKind.OPERATION_FAILED_FINAL,
                message=f"#{seq} {label}: {outcome.error_type or outcome.error}"[:500],
            )
            for outcome, seq, label in failed
        )
    stopped = False
    if failed and batch.stop_on_error and batch.pending and batch.status in ACTIVE_STATUSES:
        _, seq, label = failed[0]
        cancel_outside_work_on_commit(batch, (OperationStatus.PENDING,))
        skipped = skip_pending(batch, now, "Skipped: the batch stopped on error.")
        record_event(batch, BatchEventKind.STOPPED, None, f"Stopped after #{seq} {label} failed; {skipped} skipped")
        stopped = True
    if batch.status == BatchStatus.CANCELLING and batch.pending:
        # Draining: what came back to pending (rescheduled, handed back) does not run again.
        cancel_outside_work_on_commit(batch, (OperationStatus.PENDING,))
        skip_pending(batch, now, "Cancelled.")
    _mark_rate(batch, now)
    finished = finalize_if_done(batch, now)
    publisher.batch_changed(batch, status_changed=finished or stopped)
    return accepted


ATTEMPT_OUTCOMES = {
    "completed": AttemptOutcome.COMPLETED,
    "failed": AttemptOutcome.FAILED,
    "rescheduled": AttemptOutcome.RESCHEDULED,
    "released": AttemptOutcome.RELEASED,
}
TRACEBACK_CHARS = 20_000


def _attempt_values(batch: Batch, outcome: Outcome, now: datetime) -> tuple[Any, ...]:
    """The OperationAttempt row of an accepted outcome, as transitions.ATTEMPT_COLUMNS values."""
    claim = outcome.claim
    kind = ATTEMPT_OUTCOMES[outcome.kind]
    if kind == AttemptOutcome.FAILED and outcome.error_type == WORKER_LOST:
        kind = AttemptOutcome.LOST
    duration = outcome.run_ms if outcome.run_ms is not None else outcome.duration_ms
    if duration is None and claim.claimed_at is not None:
        duration = max(0, int((now - claim.claimed_at).total_seconds() * 1000))
    return (
        batch.pk,
        claim.operation_id,
        claim.attempt,
        claim.worker,
        claim.claimed_at,
        now,
        duration,
        kind,
        outcome.error_type[:100],
        outcome.error[:10_000],
        outcome.traceback[-TRACEBACK_CHARS:],
        *_said_values(outcome.said).values(),
    )


def _completed_values(outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "status": OperationStatus.COMPLETED,
        "result": outcome.result,
        "error": "",
        "error_type": "",
        "duration_ms": outcome.duration_ms,
        "quality_score": outcome.quality_score,
        "finished_at": now,
    }


def _mark_rate(batch: Batch, now: datetime) -> None:
    """Move the ETA's throughput marks once the newer one is a window old (Batch.eta_seconds)."""
    if batch.rate_at is None or (now - batch.rate_at).total_seconds() >= settings.BATCHSITE_ETA_WINDOW_S:
        update_batch(
            batch,
            rate_prev_at=batch.rate_at,
            rate_prev_done=batch.rate_done,
            rate_at=now,
            rate_done=batch.finished_count,
        )


def operation_complete(
    *,
    claim: Claim,
    duration_ms: int,
    result: dict[str, Any] | None = None,
    rows: Sequence[dict[str, Any]] = (),
    quality_score: float | None = None,
    then_claim_for: str = "",
) -> Recorded:
    """Record success of this attempt (operations_record of one)."""
    outcome = Outcome(claim, "completed", duration_ms, result=result, rows=rows, quality_score=quality_score)
    return _record_one(outcome, then_claim_for)


def operation_fail(
    *,
    claim: Claim,
    error: str,
    error_type: str,
    duration_ms: int | None,
    retryable: bool = True,
    then_claim_for: str = "",
) -> Recorded:
    """Record a failed attempt: back to pending with backoff while automatic retries are left,
    else failed (and, with stop_on_error, the rest skipped)."""
    outcome = Outcome(claim, "failed", duration_ms, error=error, error_type=error_type, retryable=retryable)
    return _record_one(outcome, then_claim_for)


def operation_reschedule(*, claim: Claim, after_s: float, state: dict[str, Any], then_claim_for: str = "") -> Recorded:
    """The operation waits for outside work (an external job it polls): back to pending, due
    again in `after_s` seconds, with `state` handed to its next run. No automatic retry is used
    and no duration is counted; the next claim is a new attempt number, so the fence stays exact."""
    return _record_one(Outcome(claim, "rescheduled", after_s=after_s, state=state), then_claim_for)


def _record_one(outcome: Outcome, then_claim_for: str) -> Recorded:
    group = operations_record(
        batch_id=outcome.claim.batch_id, outcomes=[outcome], claim_for=then_claim_for, claim_limit=1
    )
    claims = group.claims
    return Recorded(group.accepted[0], claims[0] if isinstance(claims, list) else claims)


# --- liveness ---------------------------------------------------------------------------------


def operation_heartbeat(*, operation_ids: Sequence[int]) -> None:
    """Mark running operations as alive; no counters change, so no batch lock is needed."""
    if operation_ids:
        Operation.objects.filter(pk__in=list(operation_ids), status=OperationStatus.RUNNING).update(
            heartbeat_at=timezone.now()
        )


def operations_report(*, reports: Sequence[tuple[int, int, Said]]) -> None:
    """Write what running attempts said of themselves ((operation id, attempt, Said) each), fenced
    like an outcome: an attempt that ended or was replaced meanwhile changes nothing. No counter
    moves, so no batch lock is taken."""
    with transaction.atomic():
        for operation_id, attempt, said in reports:
            rawsql.update(
                Operation,
                where={"pk": operation_id, "attempts": attempt, "status": OperationStatus.RUNNING},
                values=_said_values(said),
            )


def _said_values(said: Said | None) -> dict[str, Any]:
    if said is None:
        return {"progress_done": None, "progress_total": None, "progress_note": "", "log": ""}
    return {"progress_done": said.done, "progress_total": said.total, "progress_note": said.note, "log": said.log}


def operation_recover_lost(*, operation_id: int, stale_before: datetime) -> bool:
    """A running operation whose worker stopped heartbeating was lost with it: pending again at
    once, without spending an automatic retry (the work may not have failed at all), until it has
    been lost BATCHSITE_MAX_LOST times, then failed as WorkerLost (a poison operation that kills
    its workers must end). False if it turned out alive or already moved on."""
    batch_id = Operation.objects.filter(pk=operation_id).values_list("batch_id", flat=True).first()
    if batch_id is None:
        return False
    with locked_batch_or_none(batch_id) as batch:
        if batch is None:
            return False
        now = timezone.now()
        operation = Operation.objects.filter(
            pk=operation_id, status=OperationStatus.RUNNING, heartbeat_at__lt=stale_before
        ).first()
        if operation is None:
            return False
        lost = operation.lost + 1
        message = (
            f"worker lost: no heartbeat from {operation.worker or 'its worker'} since {operation.heartbeat_at:%H:%M:%S}"
        )
        record_event(batch, BatchEventKind.REAPED, None, f"#{operation.seq} {operation.label}: worker lost")
        claim = Claim(
            str(batch.pk),
            operation.pk,
            operation.attempts,
            operation.seq,
            operation.label,
            batch.type,
            {},
            0,
            worker=operation.worker,
            # An operation waiting on outside work keeps its first start; this run's is unknown.
            claimed_at=operation.started_at if operation.state is None else None,
        )
        # What the run had reported before its worker went is kept with its attempt.
        said = Said(operation.progress_done, operation.progress_total, operation.progress_note, operation.log)
        if lost >= settings.BATCHSITE_MAX_LOST:
            message = f"{message} ({lost} times; not tried again)"
            lost_for_good = Outcome(
                claim, "failed", None, error=message, error_type=WORKER_LOST, retryable=False, said=said
            )
            _record_locked(batch, [lost_for_good], now)
        else:
            values = {
                "status": OperationStatus.PENDING,
                "not_before": None,
                "error": message,
                "error_type": WORKER_LOST,
            }
            rawsql.update(Operation, where={"pk": operation.pk}, values=values)
            lost_run = Outcome(claim, "failed", None, error=message, error_type=WORKER_LOST, said=said)
            add_attempts(batch, [_attempt_values(batch, lost_run, now)])
            update_batch(batch, running=-1, pending=+1)
            publisher.batch_changed(batch)
        rawsql.update(Operation, where={"pk": operation.pk}, values={"lost": lost})
    return True


def running_operations_of(operation_ids: Sequence[int]) -> set[int]:
    """Which of these operations are still running (a worker's check after a cancel)."""
    return set(
        Operation.objects.filter(pk__in=list(operation_ids), status=OperationStatus.RUNNING).values_list(
            "pk", flat=True
        )
    )
