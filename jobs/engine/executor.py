"""The executor of a Batchsite worker: many operations at once, of every batch the worker serves.

A worker process has `concurrency` slots (threads). It serves the batches whose lane jobs it took
(jobs.engine.dispatch). One dispatcher thread does all the bookkeeping, in groups:
- it records the outcomes the slots report, one transaction per batch for all of that batch's
  outcomes since the last round, and in the same transaction claims that batch's next operations;
- it hands free slots to the served batches in turn, high priority first, round robin within a
  priority, each claim taking several operations in one transaction (services.operations_claim);
- it holds timers: a batch with nothing due is looked at again when its next operation is due, a
  batch at its max_parallel shortly after, without any process of RQ's.
A heartbeat thread keeps the running operations and the served lanes fresh, turns a cancel into a
stop of the batch's running operations, and fails operations past their timeout: their thread is
abandoned (its late outcome is fenced out by the attempt number) and a fresh thread takes its
slot; a worker left with too many abandoned threads still running asks to be recycled.

Outcomes are kept until the database took them: a write that fails (the database restarting) is
tried again, with backoff, until it lands, so work that succeeded is never lost or failed.
"""

import asyncio
import concurrent.futures
import ctypes
import dataclasses
import logging
import os
import queue
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.utils import InterfaceError, OperationalError

from jobs import services
from jobs.engine import dispatch, limits
from jobs.engine.lane import (
    OperationContext,
    OperationStopped,
    OperationTimedOut,
    release_limits,
    run_operation,
    run_operation_async,
)
from jobs.engine.reports import Report, Reports
from jobs.live import publisher
from jobs.models import Batch, BatchStatus
from jobs.optypes.base import find_type

logger = logging.getLogger(__name__)

TICK_S = 0.25  # heartbeat thread: stop flags and timeouts are looked at this often
FULL_RECHECK_S = 0.2  # a batch at its max_parallel: other workers may free room
IDLE_RECHECK_S = 5.0  # at most this long between looks at a served batch
GATHER_S = 0.002  # how long the dispatcher lets outcomes gather before it records them
DATABASE_ERRORS = (OperationalError, InterfaceError)


@dataclass(eq=False)
class Task:
    """One claimed operation on a slot."""

    claim: services.Claim
    deadline: float
    cancelled: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False
    thread_id: int | None = None
    in_operation: bool = False
    report: Report = field(default_factory=Report)
    # An async type's run: a task on the executor's event loop instead of a slot thread.
    is_async: bool = False
    future: concurrent.futures.Future | None = None


@dataclass
class Served:
    """A batch this worker serves: the lane it took, and when to look at it again."""

    batch_id: str
    lane_id: str
    priority: int
    # Its type is `async def`: it claims into the event loop's capacity, not the threads'.
    is_async: bool = False
    wake_at: float = 0.0
    # An inactive batch (paused, cancelled, finished) is let go once its running operations end.
    leaving: bool = False


PRIORITY_ORDER = {"high": 0, "default": 1, "low": 2}


class ProcessUsage:
    """CPU (percent of one core, since the previous sample) and resident memory of this process,
    from the clock and /proc: no dependency, a few microseconds per heartbeat."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.cpu = time.process_time()

    def sample(self) -> tuple[float, int]:
        wall, cpu = time.monotonic(), time.process_time()
        percent = 100.0 * (cpu - self.cpu) / (wall - self.wall) if wall > self.wall else 0.0
        self.wall, self.cpu = wall, cpu
        return round(percent, 1), resident_bytes()


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _is_async(batch_id: str) -> bool:
    """Whether the batch's type is `async def` (a type since removed runs, and fails, on a thread)."""
    type_key = Batch.objects.filter(pk=batch_id).values_list("type", flat=True).first()
    optype = find_type(type_key) if type_key else None
    return optype is not None and optype.is_async


# The executor of this process, when it is a Batchsite worker (jobs.engine.tasks.run_lane serves
# lanes on it instead of running them in-process).
current: "Executor | None" = None


class Executor:
    def __init__(self, name: str, concurrency: int, async_concurrency: int = 0) -> None:
        self.name = name
        self.concurrency = concurrency
        self.async_concurrency = async_concurrency or int(settings.BATCHSITE_WORKER_ASYNC_CONCURRENCY)
        self.loop = asyncio.new_event_loop()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.served: dict[str, Served] = {}
        self.running: dict[int, Task] = {}  # by operation id
        self.outcomes: list[tuple[Task, services.Outcome]] = []
        self.work: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.abandoned_alive = 0
        self.turn = 0
        self.recycle_requested = False
        # What the workers page shows besides the slots (jobs.selectors.workers).
        self.queues: list[str] = []
        self.started_at = time.time()
        self.finished_by_bucket: dict[int, int] = defaultdict(int)
        self.usage = ProcessUsage()
        self.reports = Reports()

    # --- life cycle ---

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn_slot()
        loop_thread = threading.Thread(target=self._run_loop, name="batchsite-async", daemon=True)
        loop_thread.start()
        for target, name in ((self._dispatch_loop, "dispatcher"), (self._beat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"batchsite-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, grace_s: float) -> None:
        """Stop claiming; let running operations finish for up to `grace_s`, record every outcome,
        hand the rest back (pending again, at once, as a new attempt), let go of every lane and
        give lanes to the batches that still have work, so other workers take over."""
        self.stopping.set()
        self.wake.set()
        try:
            dispatch.worker_register(self.name, self.describe())  # the workers page shows it stopping
        except Exception:
            logger.warning("executor: could not report stopping", exc_info=True)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self.lock:
                if not any(not task.abandoned for task in self.running.values()):
                    break
            time.sleep(0.05)
        with self.lock:
            leftovers = [task for task in self.running.values() if not task.abandoned]
            for task in leftovers:
                task.abandoned = True
                task.cancelled.set()
                if task.future is not None:
                    task.future.cancel()
                self.outcomes.append((task, services.Outcome(task.claim, "released")))
            self.running.clear()
        self.loop.call_soon_threadsafe(self.loop.stop)
        for thread in self.threads:
            thread.join(timeout=5)
        self._flush_outcomes(retry_for_s=30)
        for _ in range(self.concurrency):
            self.work.put(None)
        for served in list(self.served.values()):
            self._let_go(served, hand_over=True)
        publisher.flush()

    def serve(self, batch_id: str, lane_id: str, priority: str) -> None:
        """Take a lane: serve its batch from now on (a second lane of a batch already served is
        let go at once, the executor already claims for that batch as fast as it can)."""
        with self.lock:
            known = self.served.get(batch_id)
            if known is not None:
                known.wake_at = 0.0
                known.leaving = False
            else:
                served = Served(batch_id, lane_id, PRIORITY_ORDER.get(priority, 1), is_async=_is_async(batch_id))
                self.served[batch_id] = served
        if known is not None:
            dispatch.lane_release(batch_id, lane_id)
        else:
            dispatch.lane_heartbeat(batch_id, lane_id, dispatch.lane_ttl_s())
        # One round now, so the worker's free capacity is known before it takes the next lane.
        self._dispatch_round()

    def free_slots(self) -> int:
        """Free room of either kind (threads, the event loop's)."""
        with self.lock:
            return self._free_locked(False) + self._free_locked(True)

    def _free_locked(self, is_async: bool = False) -> int:
        capacity = self.async_concurrency if is_async else self.concurrency
        return capacity - sum(1 for task in self.running.values() if not task.abandoned and task.is_async == is_async)

    def describe(self) -> dict[str, Any]:
        """What the worker registry and the workers page show of this executor."""
        cpu_percent, rss_bytes = self.usage.sample()
        with self.lock:
            running = sum(1 for task in self.running.values() if not task.abandoned)
            return {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self.queues,
                "state": "stopping" if self.stopping.is_set() else "busy" if running else "idle",
                "started_at": self.started_at,
                "heartbeat_at": time.time(),
                "cpu_percent": cpu_percent,
                "rss_bytes": rss_bytes,
                "concurrency": self.concurrency,
                "async_concurrency": self.async_concurrency,
                "running": running,
                "abandoned": self.abandoned_alive,
                "batches": sorted(self.served),
                "operations": [
                    [task.claim.batch_id, task.claim.seq] for task in self.running.values() if not task.abandoned
                ],
            }

    # --- slots ---

    def _spawn_slot(self) -> None:
        thread = threading.Thread(target=self._slot_loop, name="batchsite-slot", daemon=True)
        thread.start()

    def _slot_loop(self) -> None:
        try:
            while True:
                task = self.work.get()
                if task is None:
                    return
                task.thread_id = threading.get_ident()
                outcome: services.Outcome | None = None
                try:
                    task.in_operation = True
                    try:
                        context = OperationContext(task.claim, task.cancelled, task.report)
                        outcome = run_operation(task.claim, context)
                    finally:
                        task.in_operation = False
                        self.reports.remove(task.claim.operation_id)
                except (OperationStopped, OperationTimedOut):
                    outcome = None  # interrupted after being abandoned: its outcome was decided
                except BaseException:
                    logger.exception("executor: slot failed around operation %s", task.claim.operation_id)
                with self.lock:
                    if task.abandoned:
                        # Its slot went to a fresh thread; this one ends with its operation.
                        self.abandoned_alive -= 1
                        return
                    self.running.pop(task.claim.operation_id, None)
                    if outcome is not None:
                        self.outcomes.append((task, outcome))
                self.wake.set()
        finally:
            connections.close_all()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            connections.close_all()

    async def _run_async(self, task: Task) -> None:
        """One async run on the loop; reports like a slot thread does."""
        outcome: services.Outcome | None = None
        try:
            context = OperationContext(task.claim, task.cancelled, task.report)
            outcome = await run_operation_async(task.claim, context)
        except asyncio.CancelledError:
            outcome = None  # timed out or cancelled: its outcome was decided when it was abandoned
        except BaseException:
            logger.exception("executor: async run failed around operation %s", task.claim.operation_id)
        finally:
            self.reports.remove(task.claim.operation_id)
        with self.lock:
            if task.abandoned:
                return
            self.running.pop(task.claim.operation_id, None)
            if outcome is not None:
                self.outcomes.append((task, outcome))
        self.wake.set()

    def _abandon(self, task: Task, outcome: services.Outcome | None) -> None:
        """Give up on a running operation (caller holds the lock): its slot goes to a fresh thread
        and its outcome, if any, is decided now (a timeout) or already was (a cancel)."""
        task.abandoned = True
        task.cancelled.set()
        self.running.pop(task.claim.operation_id, None)
        self.reports.remove(task.claim.operation_id)
        if task.claim.limit_keys:
            release_limits(task.claim)
        if outcome is not None:
            said = task.report.said()
            self.outcomes.append((task, outcome if said is None else dataclasses.replace(outcome, said=said)))
        if task.future is not None:
            # An async run: cancelling its task frees its room; no thread is left behind.
            task.future.cancel()
            self.wake.set()
            return
        self.abandoned_alive += 1
        if task.in_operation and task.thread_id is not None:
            # Interrupts an operation running Python code; one blocked in a system call ends on its
            # own, its thread counted as abandoned until then.
            exception = OperationStopped if outcome is None else OperationTimedOut
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(task.thread_id), ctypes.py_object(exception))
        if self.abandoned_alive > settings.BATCHSITE_MAX_ABANDONED and not self.recycle_requested:
            logger.warning("executor: %s threads still run past their operation; recycling", self.abandoned_alive)
            self.recycle_requested = True
        self._spawn_slot()
        self.wake.set()

    # --- the dispatcher ---

    def _dispatch_loop(self) -> None:
        try:
            while not self.stopping.is_set():
                self.wake.clear()
                try:
                    if self.outcomes and len(self.outcomes) < len(self.running):
                        # Operations claimed together tend to end together: a moment's wait
                        # records them in one transaction instead of several.
                        time.sleep(GATHER_S)
                    self._flush_outcomes()
                    self._dispatch_round()
                except DATABASE_ERRORS:
                    logger.warning("executor: database unavailable, trying again", exc_info=True)
                    connections.close_all()
                    self.stopping.wait(1.0)
                except Exception:
                    logger.exception("executor: dispatch round failed")
                    self.stopping.wait(1.0)
                self.wake.wait(self._next_wake())
        finally:
            connections.close_all()

    def _next_wake(self) -> float:
        """Until the next timer; a freed slot, an outcome or a new lane wakes the loop earlier."""
        with self.lock:
            if self.outcomes:
                return 0.0
            # Only batches whose kind of room (threads, the loop's) has some free: a full kind
            # waits for an outcome, which wakes the loop.
            waiting = [s.wake_at for s in self.served.values() if not s.leaving and self._free_locked(s.is_async) > 0]
            if not waiting:
                return IDLE_RECHECK_S
            return max(0.0, min(min(waiting) - time.monotonic(), IDLE_RECHECK_S))

    def _flush_outcomes(self, retry_for_s: float | None = None) -> None:
        """Record every reported outcome, one transaction per batch; each also claims the batch's
        share of the free slots. A database error keeps the outcomes for the next try (the
        dispatch loop retries forever; at shutdown, for `retry_for_s`)."""
        with self.lock:
            pending, self.outcomes = self.outcomes, []
        if not pending:
            return
        by_batch: dict[str, list[tuple[Task, services.Outcome]]] = defaultdict(list)
        for task, outcome in pending:
            by_batch[task.claim.batch_id].append((task, outcome))
        deadline = time.monotonic() + retry_for_s if retry_for_s is not None else None
        for batch_id, group in by_batch.items():
            delay = 0.1
            while True:
                try:
                    share = 0 if self.stopping.is_set() else self._share(batch_id)
                    recorded = services.operations_record(
                        batch_id=batch_id,
                        outcomes=[outcome for _, outcome in group],
                        claim_for=self.name if share else "",
                        claim_limit=share,
                    )
                    break
                except DATABASE_ERRORS:
                    connections.close_all()
                    if deadline is not None and time.monotonic() > deadline:
                        logger.error("executor: %s outcomes of batch %s not recorded", len(group), batch_id)
                        return
                    logger.warning("executor: could not record outcomes; again in %.1f s", delay, exc_info=True)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
            fenced = [
                task.claim.seq for (task, _), accepted in zip(group, recorded.accepted, strict=True) if not accepted
            ]
            if fenced:
                # Not an error (the operations were taken back, cancelled or reaped while they ran,
                # and another attempt owns them now), but who looks at a repeat should see it.
                logger.warning(
                    "executor: %s outcome(s) of batch %s fenced out (operations %s no longer this attempt's)",
                    len(fenced),
                    batch_id,
                    ", ".join(f"#{seq}" for seq in fenced[:10]) + (" …" if len(fenced) > 10 else ""),
                )
            finished = sum(
                1
                for (_, outcome), accepted in zip(group, recorded.accepted, strict=True)
                if accepted and outcome.kind in ("completed", "failed")
            )
            if finished:
                with self.lock:
                    self.finished_by_bucket[dispatch.throughput_bucket(time.time())] += finished
            if recorded.claims is not None:
                self._take(batch_id, recorded.claims)

    def _share(self, batch_id: str) -> int:
        """Free slots this batch may claim now: all of them when it is the only one that can use
        them, else its turn's share, so batches served together share the worker."""
        with self.lock:
            served = self.served.get(batch_id)
            if served is None or served.leaving:
                return 0
            free = self._free_locked(served.is_async)
            if free <= 0:
                return 0
            now = time.monotonic()
            contenders = [
                s for s in self.served.values() if not s.leaving and s.wake_at <= now and s.is_async == served.is_async
            ]
            best = min((s.priority for s in contenders), default=served.priority)
            if served.priority > best:
                return 0
            same = sum(1 for s in contenders if s.priority == best) or 1
            return max(1, -(-free // same))

    def _dispatch_round(self) -> None:
        """Hand the free slots to the served batches that can use them, by priority then in turn."""
        if self.stopping.is_set() or self.recycle_requested:
            return
        now = time.monotonic()
        with self.lock:
            busy = {task.claim.batch_id for task in self.running.values() if not task.abandoned}
            done = [s for s in self.served.values() if s.leaving and s.batch_id not in busy]
        for served in done:
            self._let_go(served, hand_over=False)
        with self.lock:
            ready = sorted(
                (s for s in self.served.values() if not s.leaving and s.wake_at <= now),
                key=lambda s: s.priority,
            )
            if ready:
                # Round robin within a priority: start after the batch that went first last time.
                self.turn += 1
                by_priority: dict[int, list[Served]] = defaultdict(list)
                for served in ready:
                    by_priority[served.priority].append(served)
                ready = []
                for priority in sorted(by_priority):
                    group = by_priority[priority]
                    offset = self.turn % len(group)
                    ready += group[offset:] + group[:offset]
        for served in ready:
            share = self._share(served.batch_id)
            if share <= 0:
                if self.free_slots() <= 0:
                    return
                continue
            claims = services.operations_claim(batch_id=served.batch_id, worker=self.name, limit=share)
            self._take(served.batch_id, claims)

    def _take(self, batch_id: str, claims: list[services.Claim] | services.NoClaim) -> None:
        now = time.monotonic()
        with self.lock:
            served = self.served.get(batch_id)
            if isinstance(claims, list):
                for claim in claims:
                    task = Task(claim, deadline=now + claim.timeout_s, is_async=served is not None and served.is_async)
                    self.running[claim.operation_id] = task
                    self.reports.add(batch_id, claim.operation_id, claim.attempt, task.report)
                    if task.is_async:
                        task.future = asyncio.run_coroutine_threadsafe(self._run_async(task), self.loop)
                    else:
                        self.work.put(task)
                if served is not None:
                    served.wake_at = 0.0
                return
            mine = any(task.claim.batch_id == batch_id for task in self.running.values())
            if served is None:
                return
            if claims.reason == "full":
                served.wake_at = now + FULL_RECHECK_S
                return
            if claims.reason == "not_due" and claims.next_due is not None:
                wait = max(0.0, claims.next_due.timestamp() - time.time())
                served.wake_at = now + min(wait, IDLE_RECHECK_S)
                return
            if mine:
                # Its own operations still run (they may fail into a retry): look again after.
                served.leaving = claims.reason in ("gone", "inactive")
                served.wake_at = now + IDLE_RECHECK_S
                return
        self._let_go(served, hand_over=False)

    def _let_go(self, served: Served, *, hand_over: bool) -> None:
        with self.lock:
            self.served.pop(served.batch_id, None)
        try:
            dispatch.lane_release(served.batch_id, served.lane_id)
            if hand_over:
                batch = (
                    Batch.objects.filter(pk=served.batch_id, status__in=(BatchStatus.QUEUED, BatchStatus.RUNNING))
                    .values("pending", "max_parallel", "priority")
                    .first()
                )
                if batch is not None and batch["pending"]:
                    count = dispatch.lanes_for(min(batch["pending"], batch["max_parallel"]))
                    dispatch.enqueue_lanes(served.batch_id, count=count, priority=batch["priority"])
        except Exception:
            logger.warning("executor: could not let go of batch %s cleanly", served.batch_id, exc_info=True)

    # --- the heartbeat thread ---

    def _beat_loop(self) -> None:
        last_beat = 0.0
        try:
            while not self.stopping.wait(TICK_S):
                try:
                    self._expire_overruns()
                    self._stop_cancelled()
                    if time.monotonic() - last_beat >= dispatch.heartbeat_s():
                        last_beat = time.monotonic()
                        self._heartbeat()
                    self.reports.flush()
                except DATABASE_ERRORS:
                    connections.close_all()
                    logger.warning("executor: heartbeat could not reach the database", exc_info=True)
                except Exception:
                    logger.warning("executor: heartbeat failed", exc_info=True)
        finally:
            connections.close_all()

    def _heartbeat(self) -> None:
        with self.lock:
            operation_ids = [pk for pk, task in self.running.items() if not task.abandoned]
            lanes = [(s.batch_id, s.lane_id) for s in self.served.values()]
            finished, self.finished_by_bucket = self.finished_by_bucket, defaultdict(int)
        try:
            for batch_id, lane_id in lanes:
                dispatch.lane_heartbeat(batch_id, lane_id, dispatch.lane_ttl_s())
            dispatch.worker_register(self.name, self.describe())
            dispatch.throughput_add(finished)
            limits.renew()
        except Exception:
            logger.warning("executor: Redis unavailable for heartbeats", exc_info=True)
            with self.lock:  # counted at the next heartbeat that reaches Redis
                for bucket, count in finished.items():
                    self.finished_by_bucket[bucket] += count
        services.operation_heartbeat(operation_ids=operation_ids)

    def _expire_overruns(self) -> None:
        now = time.monotonic()
        with self.lock:
            for task in [t for t in self.running.values() if t.deadline < now and not t.abandoned]:
                claim = task.claim
                message = f"Timed out after {claim.timeout_s} s."
                outcome = services.Outcome(
                    claim, "failed", claim.timeout_s * 1000, error=message, error_type="Timeout", retryable=True
                )
                self._abandon(task, outcome)

    def _stop_cancelled(self) -> None:
        with self.lock:
            live = [task for task in self.running.values() if not task.abandoned]
        if not live:
            return
        batches = {task.claim.batch_id for task in live}
        try:
            stopped = [batch_id for batch_id in batches if dispatch.stop_requested(batch_id)]
            # Operations cancelled one by one (their batch goes on).
            single = dispatch.operations_stop_requested([task.claim.operation_id for task in live])
        except Exception:
            return  # Redis unavailable: the cancel's effect on the rows holds regardless
        if not stopped and not single:
            return
        with self.lock:
            tasks = [
                t
                for t in self.running.values()
                if (t.claim.batch_id in stopped or t.claim.operation_id in single) and not t.abandoned
            ]
        # The cancel recorded them as skipped; the check keeps a running one of a batch cancelled
        # long ago (the stop flag lives a day) from being stopped by mistake.
        still_running = services.running_operations_of([t.claim.operation_id for t in tasks])
        with self.lock:
            for task in tasks:
                if task.claim.operation_id not in still_running and not task.abandoned:
                    self._abandon(task, None)
