"""The RQ worker class Batchsite runs (the RQ WORKER_CLASS setting, so plain `rqworker` uses it)."""

import logging
import threading

from django.conf import settings
from django.db import connections
from rq.worker import Worker

from jobs.engine import reaper, ticks

logger = logging.getLogger(__name__)


class BatchsiteWorker(Worker):
    """RQ's forking worker, plus the reaper timer and fork-safe database connections.

    The reaper runs here rather than as a job for RQ's scheduler: when a worker is SIGKILLed its
    scheduler lock lives on for a minute or more, so a scheduled reaper would stall exactly when
    it is needed. Every worker ticks; a Redis lock lets one of them reap per interval.
    """

    def work(self, *args, **kwargs):
        stop = threading.Event()
        reaper = threading.Thread(target=self._reap_periodically, args=(stop,), name="batchsite-reaper", daemon=True)
        reaper.start()
        ticker = ticks.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            stop.set()
            if ticker is not None:
                ticker.terminate()

    def fork_work_horse(self, job, queue) -> None:
        # A connection opened in this thread would be shared by every forked horse (PostgreSQL
        # then fails with TLS/EOF errors): close them so each horse opens its own.
        connections.close_all()
        super().fork_work_horse(job, queue)

    def _reap_periodically(self, stop: threading.Event) -> None:
        while not stop.wait(settings.BATCHSITE_REAP_INTERVAL_S):
            try:
                report = reaper.reap_if_due(self.name)
                if report and (report.recovered_operations or report.restarted_lanes):
                    logger.info("reaper: %s", report)
            except Exception:
                logger.warning("reaper: failed, will try again", exc_info=True)
            finally:
                connections.close_all()
