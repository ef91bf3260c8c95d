"""Running one claimed operation, and the in-process lane.

`run_operation` turns one attempt into an Outcome: it calls the type's function with an
OperationContext and maps what happens (a result, an exception, a reschedule, an overrun) to what
the services record. Both the worker's executor (jobs.engine.executor, many operations at once on
threads) and the in-process `Lane` (one at a time in the caller, for `run_lane` outside a Batchsite
worker, tests and profiling) use it.
"""

import asyncio
import dataclasses
import inspect
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.utils import timezone

from jobs import secrets, services
from jobs.engine import dispatch, limits
from jobs.engine.reports import Report, Reports
from jobs.errors import REDIS_ERRORS, InvalidInput
from jobs.live import publisher
from jobs.models import Batch
from jobs.optypes import get_type
from jobs.optypes.base import OperationFailure, PermanentFailure, Reschedule

logger = logging.getLogger(__name__)


class OperationTimedOut(BaseException):
    """Raised inside an operation that ran past its timeout (BaseException: `except Exception`
    in an operation's code must not swallow it)."""


class OperationStopped(BaseException):
    """Raised inside an operation whose batch was cancelled."""


def worker_name() -> str:
    return f"{os.environ.get('RQ_WORKER_ID') or socket.gethostname()}:{os.getpid()}"


class OperationContext:
    """What an operation function receives: its params and ways to talk back to the engine."""

    def __init__(self, claim: services.Claim, cancelled: threading.Event, report: Report | None = None) -> None:
        self.batch_id = claim.batch_id
        self.operation_id = claim.operation_id
        self.seq = claim.seq
        self.label = claim.label
        self.params = claim.params
        self.attempt = claim.attempt
        self.timeout_s = claim.timeout_s
        self.state = claim.state
        self.rows: list[dict[str, Any]] = []
        self.quality_score: float | None = None
        self._cancelled = cancelled
        self.report = report if report is not None else Report()

    def heartbeat(self, note: str = "") -> None:
        """Prove liveness now (long steps call this between chunks); a note shows as its progress's."""
        if note:
            self.report.set_note(note)
        if _in_event_loop():
            # An async type on the worker's loop: the executor's heartbeat keeps it alive, and the
            # loop must not wait on the database.
            return
        services.operation_heartbeat(operation_ids=[self.operation_id])

    def progress(self, done: float, total: float | None = None, note: str = "") -> None:
        """Say how far it got (`done` of `total`, which may stay unknown); shown live on its pages
        and kept with the attempt. Cheap to call often: written every half second at most."""
        self.report.progress(done, total, note)

    def log(self, message: object) -> None:
        """Add lines to this attempt's log (the last 500 lines, 64 KiB, are kept)."""
        self.report.log(message)

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def set_quality(self, score: float) -> None:
        if not 0 <= score <= 1:
            raise ValueError("quality score must be between 0 and 1")
        self.quality_score = float(score)

    def add_items(self, items: list[Any]) -> int:
        """Add operations to this batch now (labels or {label, params} objects, validated by the
        type as at creation); they run like the others. Returns how many were added. Raises
        InvalidInput, or IllegalTransition once the batch stopped taking operations (cancelled,
        draining, expired), which fails this operation like any exception. Execution is at least
        once: an operation that runs again adds its items again unless it checks `ctx.attempt`."""
        batch = services.batch_add_operations(batch_id=self.batch_id, items=items, source=f"#{self.seq} {self.label}")
        return len(items) if batch is not None else 0


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_operation(claim: services.Claim, context: OperationContext, before=None, after=None) -> services.Outcome | None:
    """Run one attempt and say how it ended; None when it was stopped by a cancel (the cancel
    already recorded it as skipped). `before`/`after` arm and disarm a preemption (the in-process
    lane's SIGALRM); without one, an overrun is judged when the function returns. The outcome
    carries what the operation reported of itself."""
    if claim.limit_keys:
        wait = acquire_limits(claim)
        if wait is not None:
            return limited(claim, wait)
    try:
        outcome = _run(claim, context, before, after)
    finally:
        if claim.limit_keys:
            release_limits(claim)
    return _with_said(outcome, context)


async def run_operation_async(claim: services.Claim, context: OperationContext) -> services.Outcome | None:
    """run_operation for an `async def` type, on the worker's event loop: the same outcomes.
    A timeout or a cancel cancels its task (the caller decided that outcome already)."""
    if claim.limit_keys:
        wait = await asyncio.to_thread(acquire_limits, claim)
        if wait is not None:
            return limited(claim, wait)
    started = time.perf_counter()
    try:
        try:
            optype = _prepared(claim, context)
            value = optype.run(context)
            result = await value if inspect.isawaitable(value) else value
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            caught = exc
            outcome = _run(claim, context, None, None, invoke=lambda: _reraise(caught), started=started)
        else:
            outcome = _run(claim, context, None, None, invoke=lambda: result, started=started)
    finally:
        if claim.limit_keys:
            await asyncio.to_thread(release_limits, claim)
    return _with_said(outcome, context)


def _reraise(exc: BaseException) -> Any:
    raise exc


def _with_said(outcome: services.Outcome | None, context: OperationContext) -> services.Outcome | None:
    said = context.report.said()
    if outcome is None or said is None:
        return outcome
    return dataclasses.replace(outcome, said=said)


def acquire_limits(claim: services.Claim) -> limits.Wait | None:
    try:
        return limits.acquire(claim.operation_id, claim.attempt, claim.limit_keys)
    except REDIS_ERRORS:
        return limits.Wait(claim.limit_keys[0], "limits (Redis unavailable)", 1.0)


def limited(claim: services.Claim, wait: limits.Wait) -> services.Outcome:
    return services.Outcome(claim, "limited", after_s=wait.after_s, error=wait.text, limit_key=wait.key)


def _prepared(claim: services.Claim, context: OperationContext):
    optype = get_type(claim.type)
    if optype.secret_params:
        # Stored encrypted; only the run sees them in clear.
        context.params = secrets.reveal_params(optype, context.params)
    return optype


def _settled(value: Any) -> Any:
    """An async type's coroutine, run to its end here (a lane or a thread outside the worker's loop)."""
    return asyncio.run(value) if inspect.iscoroutine(value) else value


def release_limits(claim: services.Claim) -> None:
    try:
        limits.release(claim.operation_id, claim.attempt)
    except REDIS_ERRORS:
        logger.warning("limits: could not give back the leases of operation %s", claim.operation_id)


def _run(
    claim: services.Claim, context: OperationContext, before, after, invoke=None, started: float | None = None
) -> services.Outcome | None:
    """One attempt's outcome; `invoke` stands for the call when it already happened elsewhere
    (an async run: it returns the result or raises what the run raised)."""
    started = time.perf_counter() if started is None else started

    def failed(error: str, error_type: str, retryable: bool = True, trace: str = "") -> services.Outcome:
        duration = _duration_ms(claim, started)
        return services.Outcome(
            claim,
            "failed",
            duration,
            error=error,
            error_type=error_type,
            retryable=retryable,
            run_ms=_elapsed_ms(started),
            traceback=trace,
        )

    timed_out = f"Timed out after {claim.timeout_s} s."
    try:
        if invoke is not None:
            result = invoke()
        else:
            optype = _prepared(claim, context)
            if before:
                before(claim.timeout_s)
            try:
                result = _settled(optype.run(context))
            finally:
                if after:
                    after()
    except OperationStopped:
        return None
    except OperationTimedOut:
        return failed(timed_out, "Timeout")
    except InvalidInput as exc:
        return failed(str(exc), "UnknownType", retryable=False)
    except secrets.SecretUnreadable as exc:
        return failed(str(exc), "SecretUnreadable", retryable=False)
    except Reschedule as request:
        try:
            json.dumps(request.state, cls=DjangoJSONEncoder)
        except (TypeError, ValueError) as exc:
            return failed(f"Reschedule state is not JSON-serialisable: {exc}", "BadResult", retryable=False)
        return services.Outcome(
            claim, "rescheduled", after_s=request.after_s, state=request.state, run_ms=_elapsed_ms(started)
        )
    except Exception as exc:
        error_type = exc.error_type if isinstance(exc, OperationFailure) else type(exc).__name__
        retryable = not isinstance(exc, PermanentFailure)
        return failed(str(exc) or repr(exc), error_type, retryable, trace=traceback.format_exc())
    if _elapsed_ms(started) > claim.timeout_s * 1000:
        return failed(timed_out, "Timeout")
    if result is not None and not isinstance(result, dict):
        result = {"value": result}
    try:
        json.dumps(result, cls=DjangoJSONEncoder)
        if context.rows:
            json.dumps(context.rows, cls=DjangoJSONEncoder)
    except (TypeError, ValueError) as exc:
        return failed(f"Result is not JSON-serialisable: {exc}", "BadResult", retryable=False)
    return services.Outcome(
        claim,
        "completed",
        _duration_ms(claim, started),
        result=result,
        rows=context.rows,
        quality_score=context.quality_score,
        run_ms=_elapsed_ms(started),
    )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _duration_ms(claim: services.Claim, started: float) -> int:
    """What an outcome records as the operation's duration: this run's, or for an operation that
    rescheduled itself while outside work went on, the time since that work began."""
    if claim.state is not None and claim.started_at is not None:
        return max(_elapsed_ms(started), int((timezone.now() - claim.started_at).total_seconds() * 1000))
    return _elapsed_ms(started)


# --- the in-process lane ------------------------------------------------------------------------

STOP_POLL_S = 0.25


class Interrupter:
    """Preempts the operation running in the main thread with SIGALRM: at its timeout, or at
    once when another thread calls stop(). Off the main thread operations are not preempted;
    timeouts are then judged after the fact."""

    def __init__(self) -> None:
        self.enabled = threading.current_thread() is threading.main_thread()
        self.active = False
        self.stop_requested = False
        self.lock = threading.Lock()
        self.previous_handler: Any = None

    def install(self) -> None:
        if self.enabled:
            self.previous_handler = signal.signal(signal.SIGALRM, self._handle)

    def uninstall(self) -> None:
        if self.enabled:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous_handler or signal.SIG_DFL)

    def arm(self, timeout_s: float) -> None:
        with self.lock:
            self.active, self.stop_requested = True, False
            if self.enabled:
                signal.setitimer(signal.ITIMER_REAL, timeout_s)

    def disarm(self) -> None:
        with self.lock:
            self.active = False
            if self.enabled:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def stop(self) -> None:
        with self.lock:
            if self.active and not self.stop_requested:
                self.stop_requested = True
                if self.enabled:
                    signal.setitimer(signal.ITIMER_REAL, 0.001)

    def _handle(self, signum, frame) -> None:
        # No lock here: the handler runs in the main thread, which may hold it.
        if not self.active:
            return
        self.active = False
        if self.stop_requested:
            raise OperationStopped()
        raise OperationTimedOut()


class Lane:
    """One batch's operations, one at a time, in the calling process: what `run_lane` does
    outside a Batchsite worker (whose executor serves lanes on its threads instead)."""

    def __init__(self, batch_id: str, lane_id: str) -> None:
        self.batch_id = str(batch_id)
        self.lane_id = lane_id
        self.worker = worker_name()
        self.current: services.Claim | None = None
        self.cancelled = threading.Event()
        self.interrupter = Interrupter()
        self.halt = threading.Event()
        self.reports = Reports()

    def run(self) -> str:
        """Run operations until there is nothing due; returns why it stopped. Work that is due
        later is handed to a fresh lane job, which a worker's executor holds until then."""
        connections.close_all()
        dispatch.lane_heartbeat(self.batch_id, self.lane_id, dispatch.lane_ttl_s())
        beat = threading.Thread(target=self._beat, name=f"heartbeat-{self.lane_id}", daemon=True)
        beat.start()
        self.interrupter.install()
        try:
            claim: services.Claim | services.NoClaim | None
            claim = services.operation_claim_next(batch_id=self.batch_id, worker=self.worker)
            while isinstance(claim, services.Claim):
                self.current = claim
                report = Report()
                self.reports.add(claim.batch_id, claim.operation_id, claim.attempt, report)
                try:
                    outcome = run_operation(
                        claim,
                        OperationContext(claim, self.cancelled, report),
                        self.interrupter.arm,
                        self.interrupter.disarm,
                    )
                finally:
                    self.reports.remove(claim.operation_id)
                self.current = None
                if outcome is None:
                    # Stopped by a cancel: of the batch (the next claim says inactive) or of
                    # this operation alone (the lane goes on with the next one).
                    self.cancelled.clear()
                    claim = services.operation_claim_next(batch_id=self.batch_id, worker=self.worker)
                    continue
                group = services.operations_record(
                    batch_id=self.batch_id, outcomes=[outcome], claim_for=self.worker, claim_limit=1
                )
                claim = group.claims[0] if isinstance(group.claims, list) else group.claims
            assert claim is not None  # asked with a claim limit, every record answers with one
            if claim.reason == "not_due" and claim.next_due:
                priority = Batch.objects.filter(pk=self.batch_id).values_list("priority", flat=True).first()
                if priority:
                    dispatch.enqueue_lanes(self.batch_id, count=1, priority=priority)
            return claim.reason
        finally:
            self.halt.set()
            self.interrupter.uninstall()
            beat.join(timeout=5)
            dispatch.lane_release(self.batch_id, self.lane_id)
            publisher.flush()
            connections.close_all()

    @staticmethod
    def _stop_requested(claim: services.Claim) -> bool:
        """The batch was cancelled, or this operation alone (then the check of the row, which a
        cancel marked skipped, keeps a stale flag from stopping a later attempt)."""
        if dispatch.stop_requested(claim.batch_id):
            return True
        if not dispatch.operations_stop_requested([claim.operation_id]):
            return False
        return not services.running_operations_of([claim.operation_id])

    def _beat(self) -> None:
        """Heartbeat thread: keeps the lane registered, the running operation fresh, and turns a
        cancel request into an interrupt of the running operation."""
        last_beat = time.monotonic()
        try:
            while not self.halt.wait(STOP_POLL_S):
                current = self.current
                try:
                    if current is not None and not self.cancelled.is_set() and self._stop_requested(current):
                        self.cancelled.set()
                        self.interrupter.stop()
                    self.reports.flush()
                    if time.monotonic() - last_beat >= dispatch.heartbeat_s():
                        last_beat = time.monotonic()
                        dispatch.lane_heartbeat(self.batch_id, self.lane_id, dispatch.lane_ttl_s())
                        limits.renew()
                        if current is not None:
                            services.operation_heartbeat(operation_ids=[current.operation_id])
                except Exception:
                    logger.warning("lane %s: heartbeat failed", self.lane_id, exc_info=True)
        finally:
            connections.close_all()
