"""The RQ worker class Batchsite runs (the RQ WORKER_CLASS setting, so plain `rqworker` uses it)."""

import logging
import os
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections
from django.db.backends.signals import connection_created
from rq.worker import SimpleWorker

from jobs.engine import dispatch, executor, keycheck, reaper, ticks
from jobs.engine.lane import worker_name
from jobs.errors import REDIS_ERRORS

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0


def configure_worker_session(sender, connection, **kwargs: Any) -> None:
    """A worker's PostgreSQL connections commit without waiting for the WAL flush: its
    transactions are the engine's claims and outcomes, and a database crash may forget the last
    fraction of a second of them, each as a whole, which at-least-once execution absorbs (those
    operations run again; the counters stay equal to the rows). Commits stop waiting on the disk
    (bench/engine.py measures both)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        if settings.BATCHSITE_RELAXED_COMMIT:
            cursor.execute("SET synchronous_commit TO OFF")
        # A worker cut off from the database in the middle of a transaction (its host's network
        # gone) would hold the batch row's lock until TCP gave up, hours later, stalling every other
        # worker on that batch: PostgreSQL ends such a session instead. A worker's transactions
        # never wait on anything but the database, so a healthy one is never idle this long.
        timeout_ms = int(settings.BATCHSITE_WORKER_IDLE_IN_TRANSACTION_S * 1000)
        cursor.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}")


class BatchsiteWorker(SimpleWorker):
    """An RQ worker that runs up to BATCHSITE_WORKER_CONCURRENCY operations at once.

    RQ hands it lane jobs; each makes the worker's executor (jobs.engine.executor) serve that
    batch, and the job ends at once. It does not fork per job: the executor's threads, database
    connections and timers live as long as the worker.

    It rides out Redis outages: RQ's own calls that would end the worker on a connection error are
    retried here with backoff. It runs the reaper on a timer rather than as a job for RQ's
    scheduler: the scheduler dies with the worker that holds its lock and comes back only in RQ's
    maintenance pass, minutes later, exactly when the reaper is needed. Every worker ticks; a Redis
    lock lets one of them reap per interval.
    """

    def work(self, *args: Any, **kwargs: Any) -> bool:
        connection_created.connect(configure_worker_session)
        keycheck.check_or_exit()
        # The scheduler process RQ forks must not inherit the connection the check opened.
        connections.close_all()
        self.executor = executor.Executor(worker_name(), int(settings.BATCHSITE_WORKER_CONCURRENCY))
        self.executor.queues = self.queue_names()
        executor.current = self.executor
        self.executor.start()
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(stop,), name="batchsite-reaper", daemon=True)
        ticker.start()
        ticks.start(stop)
        try:
            return super().work(*args, **kwargs)
        finally:
            stop.set()
            self.executor.stop(grace_s=settings.BATCHSITE_STOP_GRACE_S)
            executor.current = None
            try:
                dispatch.worker_unregister(self.executor.name)
            except Exception:
                logger.warning("worker: could not unregister", exc_info=True)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        # Lanes are taken even when every slot is busy: the executor then shares the slots that free
        # up between its batches by priority and in turn, so a batch started later, or of a higher
        # priority, is not left in the queue behind a wide one. Redis hands a lane to the worker
        # that has waited longest, so a batch's lanes spread over the workers.
        delay = 0.5
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except REDIS_ERRORS:
                delay = self._back_off("dequeue", delay)

    def execute_job(self, job, queue) -> None:
        # A connection this thread kept from before a database restart is dead, and the job's
        # first query would fail on it (the lane lost until the reaper's next round): a job
        # starts on a connection that was checked, or a new one.
        close_old_connections()
        try:
            super().execute_job(job, queue)
        except REDIS_ERRORS:
            # The lane may be lost with its bookkeeping; the reaper gives the batch a new one.
            self._back_off(f"job {job.id}", 1.0)

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        self._safely(super().heartbeat, *args, **kwargs)

    def check_for_suspension(self, burst: bool) -> None:
        self._safely(super().check_for_suspension, burst)

    def run_maintenance_tasks(self) -> None:
        self._safely(super().run_maintenance_tasks)

    def _safely(self, call, *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except REDIS_ERRORS:
            self._back_off(getattr(call, "__name__", "call"), 1.0)

    def _back_off(self, what: str, delay: float) -> float:
        logger.warning("worker: Redis unavailable (%s); trying again in %.1f s", what, delay)
        time.sleep(delay)
        return min(delay * 2, MAX_BACKOFF_S)

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(settings.BATCHSITE_REAP_INTERVAL_S):
            try:
                report = reaper.reap_if_due(self.name)
                if report and (report.recovered_operations or report.restarted_lanes or report.expired_batches):
                    logger.info("reaper: %s", report)
            except Exception:
                logger.warning("reaper: failed, will try again", exc_info=True)
            finally:
                connections.close_all()
            if self.executor.recycle_requested:
                # Too many operation threads outlived their timeout: a warm restart frees them
                # (the supervisor starts the worker again).
                os.kill(os.getpid(), signal.SIGTERM)
                return
