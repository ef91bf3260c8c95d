"""The features' periodic functions (settings.BATCHSITE_WORKER_TICKS, dotted paths of functions
taking no argument, e.g. the notifications outbox), run beside every RQ worker.

They run in a process of their own, spawned by the worker, not in a thread of it: the worker forks
a work horse per job, and a fork taken while another thread holds a lock (SQLite's, OpenSSL's)
leaves the horse waiting on that lock forever. Each tick must be safe in several workers at once.
"""

import logging
import multiprocessing
import os
import time

logger = logging.getLogger(__name__)


def start() -> multiprocessing.Process | None:
    """Spawn the tick process of this worker, or None when no tick is configured."""
    from django.conf import settings

    if not settings.BATCHSITE_WORKER_TICKS:
        return None
    process = multiprocessing.get_context("spawn").Process(
        target=run_forever, args=(os.getpid(),), name="batchsite-ticks", daemon=True
    )
    process.start()
    return process


def run_forever(parent_pid: int) -> None:
    """Call every tick each BATCHSITE_TICK_INTERVAL_S until the worker that spawned it is gone."""
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections
    from django.utils.module_loading import import_string

    ticks = [import_string(path) for path in settings.BATCHSITE_WORKER_TICKS]
    try:
        while os.getppid() == parent_pid:
            started = time.monotonic()
            for tick in ticks:
                try:
                    tick()
                except Exception:
                    logger.warning("tick %s.%s failed, will try again", tick.__module__, tick.__name__, exc_info=True)
                finally:
                    connections.close_all()
            time.sleep(max(0.0, settings.BATCHSITE_TICK_INTERVAL_S - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
