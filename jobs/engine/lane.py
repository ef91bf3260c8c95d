"""The engine (SPEC §3): lanes that run a batch's operations, and the reaper that heals.

A lane is one RQ job. It loops: claim the next due operation (jobs.services), run it under the
batch's timeout, record the outcome, until nothing is left, the batch stops, or its time slice
ends; then it hands off to a fresh lane at the back of the queue, so batches share workers and
the reaper (on the `high` queue) gets its turn.
"""

import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.utils import timezone

from jobs import services
from jobs.engine import dispatch
from jobs.errors import InvalidInput
from jobs.live import publisher
from jobs.models import Batch
from jobs.optypes import get_type
from jobs.optypes.base import OperationFailure, PermanentFailure, Reschedule

logger = logging.getLogger(__name__)

STOP_POLL_S = 0.25


class OperationTimedOut(BaseException):
    """Raised inside an operation that ran past its timeout (BaseException: `except Exception`
    in an operation's code must not swallow it)."""


class OperationStopped(BaseException):
    """Raised inside an operation whose batch was cancelled."""


class Interrupter:
    """Preempts the operation running in the main thread with SIGALRM: at its timeout, or at
    once when another thread calls stop(). Off the main thread (tests calling a lane directly)
    operations are not preempted; timeouts are then judged after the fact."""

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


class OperationContext:
    """What an operation function receives: its params and ways to talk back to the engine."""

    def __init__(self, claim: services.Claim, lane: "Lane") -> None:
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
        self._lane = lane

    def heartbeat(self, note: str = "") -> None:
        """Prove liveness now (long steps call this between chunks)."""
        services.operation_heartbeat(operation_ids=[self.operation_id])

    def is_cancelled(self) -> bool:
        return self._lane.stop_flag

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def set_quality(self, score: float) -> None:
        if not 0 <= score <= 1:
            raise ValueError("quality score must be between 0 and 1")
        self.quality_score = float(score)


class Lane:
    def __init__(self, batch_id: str, lane_id: str) -> None:
        self.batch_id = str(batch_id)
        self.lane_id = lane_id
        self.worker = f"{os.environ.get('RQ_WORKER_ID') or socket.gethostname()}:{os.getpid()}"
        self.current: services.Claim | None = None
        self.stop_flag = False
        self.interrupter = Interrupter()
        self.halt = threading.Event()
        self.ttl_s = 3 * settings.BATCHSITE_HEARTBEAT_S + 1

    def run(self) -> str:
        """Run operations until there is nothing for this lane to do; returns why it stopped."""
        connections.close_all()
        dispatch.lane_heartbeat(self.batch_id, self.lane_id, self.ttl_s)
        beat = threading.Thread(target=self._beat, name=f"heartbeat-{self.lane_id}", daemon=True)
        beat.start()
        self.interrupter.install()
        deadline = time.monotonic() + settings.BATCHSITE_LANE_SLICE_S
        try:
            claim: services.Claim | services.NoClaim | None
            claim = services.operation_claim_next(batch_id=self.batch_id, worker=self.worker)
            while isinstance(claim, services.Claim):
                in_slice = time.monotonic() < deadline
                claim = self._execute(claim, claim_next=in_slice)
                if not in_slice:
                    self._successor()
                    return "handoff"
            assert claim is not None  # asked with claim_next, every outcome answers with the next claim
            if claim.reason == "not_due" and claim.next_due:
                self._successor(at=claim.next_due)
            return claim.reason
        finally:
            self.halt.set()
            self.interrupter.uninstall()
            beat.join(timeout=5)
            dispatch.lane_release(self.batch_id, self.lane_id)
            publisher.flush()
            connections.close_all()

    def _successor(self, at=None) -> None:
        priority = Batch.objects.filter(pk=self.batch_id).values_list("priority", flat=True).first()
        if priority:
            dispatch.enqueue_lanes(self.batch_id, count=1, priority=priority, at=at)

    def _execute(self, claim: services.Claim, claim_next: bool) -> services.Claim | services.NoClaim | None:
        """Run one claimed operation and record its outcome; returns the next claim, taken in the
        same transaction as the outcome when `claim_next` (None when not asked for)."""
        context = OperationContext(claim, self)
        self.current = claim
        started = time.perf_counter()
        then_claim_for = self.worker if claim_next else ""
        try:
            try:
                optype = get_type(claim.type)
                self.interrupter.arm(claim.timeout_s)
                try:
                    result = optype.run(context)
                finally:
                    self.interrupter.disarm()
            except OperationStopped:
                # The cancel already recorded this operation as skipped; the batch is inactive now.
                return services.NoClaim("inactive")
            except OperationTimedOut:
                return self._fail(claim, started, f"Timed out after {claim.timeout_s} s.", "Timeout", then_claim_for)
            except InvalidInput as exc:
                return self._fail(claim, started, str(exc), "UnknownType", then_claim_for, retryable=False)
            except Reschedule as request:
                return self._reschedule(claim, started, request, then_claim_for)
            except Exception as exc:
                permanent = isinstance(exc, PermanentFailure)
                message = str(exc) or repr(exc)
                error_type = exc.error_type if isinstance(exc, OperationFailure) else type(exc).__name__
                return self._fail(claim, started, message, error_type, then_claim_for, retryable=not permanent)
            if _elapsed_ms(started) > claim.timeout_s * 1000:
                return self._fail(claim, started, f"Timed out after {claim.timeout_s} s.", "Timeout", then_claim_for)
            if result is not None and not isinstance(result, dict):
                result = {"value": result}
            try:
                json.dumps(result, cls=DjangoJSONEncoder)
                if context.rows:
                    json.dumps(context.rows, cls=DjangoJSONEncoder)
            except (TypeError, ValueError) as exc:
                error = f"Result is not JSON-serialisable: {exc}"
                return self._fail(claim, started, error, "BadResult", then_claim_for, retryable=False)
            return services.operation_complete(
                claim=claim,
                duration_ms=_duration_ms(claim, started),
                result=result,
                rows=context.rows,
                quality_score=context.quality_score,
                then_claim_for=then_claim_for,
            ).next
        finally:
            self.current = None

    def _fail(self, claim, started, error, error_type, then_claim_for, retryable=True):
        return services.operation_fail(
            claim=claim,
            error=error,
            error_type=error_type,
            duration_ms=_duration_ms(claim, started),
            retryable=retryable,
            then_claim_for=then_claim_for,
        ).next

    def _reschedule(self, claim, started, request: Reschedule, then_claim_for):
        try:
            json.dumps(request.state, cls=DjangoJSONEncoder)
        except (TypeError, ValueError) as exc:
            error = f"Reschedule state is not JSON-serialisable: {exc}"
            return self._fail(claim, started, error, "BadResult", then_claim_for, retryable=False)
        return services.operation_reschedule(
            claim=claim, after_s=request.after_s, state=request.state, then_claim_for=then_claim_for
        ).next

    def _beat(self) -> None:
        """Heartbeat thread: keeps the lane registered, the running operation fresh, and turns a
        cancel request into an interrupt of the running operation."""
        last_beat = time.monotonic()
        try:
            while not self.halt.wait(STOP_POLL_S):
                current = self.current
                try:
                    if current is not None and not self.stop_flag and dispatch.stop_requested(self.batch_id):
                        self.stop_flag = True
                        self.interrupter.stop()
                    if time.monotonic() - last_beat >= settings.BATCHSITE_HEARTBEAT_S:
                        last_beat = time.monotonic()
                        dispatch.lane_heartbeat(self.batch_id, self.lane_id, self.ttl_s)
                        if current is not None:
                            services.operation_heartbeat(operation_ids=[current.operation_id])
                except Exception:
                    logger.warning("lane %s: heartbeat failed", self.lane_id, exc_info=True)
        finally:
            connections.close_all()


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _duration_ms(claim: services.Claim, started: float) -> int:
    """What an outcome records as the operation's duration: this run's, or for an operation that
    rescheduled itself while outside work went on, the time since that work began."""
    if claim.state is not None and claim.started_at is not None:
        return max(_elapsed_ms(started), int((timezone.now() - claim.started_at).total_seconds() * 1000))
    return _elapsed_ms(started)
