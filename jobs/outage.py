"""A dependency's outage in the log: one line when it begins, one when it ends.

A process that talks to Redis many times a second (the live-event publisher) would otherwise log
a traceback per call while Redis is down: tens of thousands of lines in seconds, burying the one
that says what happened.
"""

import logging
import threading
import time


class OutageLog:
    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.down_since: float | None = None
        self.failures = 0
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        self.logger.warning(
            "%s does not answer (%s: %s); further failures are not logged until it answers again",
            self.what,
            type(exc).__name__,
            exc,
        )

    def succeeded(self) -> None:
        if self.down_since is None:
            return
        with self._lock:
            since, failures = self.down_since, self.failures
            self.down_since, self.failures = None, 0
        if since is not None:
            self.logger.warning(
                "%s answers again after %.1f s (%d failed calls meanwhile)",
                self.what,
                time.monotonic() - since,
                failures,
            )
