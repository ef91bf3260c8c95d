"""The RQ worker class Batchsite runs (`rqworker --worker-class jobs.worker.BatchsiteWorker`,
also the RQ WORKER_CLASS setting)."""

import logging

from django.db import connections
from rq.worker import Worker

from jobs import engine

logger = logging.getLogger(__name__)


class BatchsiteWorker(Worker):
    def __init__(self, *args, **kwargs) -> None:
        # Maintenance also restarts a broken reaper chain, so run it every minute, not every 10.
        kwargs.setdefault("maintenance_interval", 60)
        super().__init__(*args, **kwargs)

    def work(self, *args, **kwargs):
        self._ensure_reaper()
        return super().work(*args, **kwargs)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        self._ensure_reaper()

    def fork_work_horse(self, job, queue) -> None:
        # A connection opened in this parent would be shared by every forked horse (PostgreSQL
        # then fails with TLS/EOF errors): close them so each horse opens its own.
        connections.close_all()
        super().fork_work_horse(job, queue)

    def _ensure_reaper(self) -> None:
        try:
            engine.ensure_reaper_scheduled()
        except Exception:
            logger.warning("could not schedule the reaper", exc_info=True)
