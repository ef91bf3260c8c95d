"""The features' periodic functions (settings.BATCHSITE_WORKER_TICKS, dotted paths of functions
taking no argument, e.g. the notifications outbox), run by every RQ worker on a thread of its own.

The core imports none of them: they are named by the setting. Each must be safe to run in several
workers at once, and may take a while (a webhook call), so it does not share the reaper's thread.
"""

import logging
import threading

from django.conf import settings
from django.db import connections
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


def start(stop: threading.Event) -> threading.Thread | None:
    """Start calling the ticks every BATCHSITE_TICK_INTERVAL_S until `stop` is set; None when no
    tick is configured."""
    if not settings.BATCHSITE_WORKER_TICKS:
        return None
    functions = [import_string(path) for path in settings.BATCHSITE_WORKER_TICKS]
    thread = threading.Thread(target=_run, args=(functions, stop), name="batchsite-ticks", daemon=True)
    thread.start()
    return thread


def _run(functions: list, stop: threading.Event) -> None:
    while not stop.wait(settings.BATCHSITE_TICK_INTERVAL_S):
        for function in functions:
            try:
                function()
            except Exception:
                logger.warning(
                    "tick %s.%s failed, will try again", function.__module__, function.__name__, exc_info=True
                )
            finally:
                connections.close_all()
