"""What a running operation says about itself: progress, log lines, a heartbeat's note.

The calls (`ctx.progress`, `ctx.log`, `ctx.heartbeat(note)`) only change memory; the worker's
heartbeat thread writes what changed every FLUSH_S per operation (one fenced UPDATE of the
operation row, no batch lock) and tells the batch's pages, so an operation that reports in a tight
loop costs the database two writes a second, not one per call. The outcome carries the last report,
and its record writes it into the attempt.
"""

import math
import threading
import time
from collections import deque

from jobs import services
from jobs.live import publisher
from jobs.services.operations import Said

LOG_LINES = 500
LOG_BYTES = 64 * 1024
NOTE_CHARS = 500
FLUSH_S = 0.5


class Report:
    """The progress and the bounded log of one attempt (the last LOG_LINES lines, LOG_BYTES)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: float | None = None
        self.total: float | None = None
        self.note = ""
        self.lines: deque[str] = deque()
        self.size = 0
        self.used = False
        self.changed = 0  # bumped by every report; the flush writes when it differs from `written`
        self.written = 0
        self.written_at = 0.0

    def progress(self, done: float, total: float | None = None, note: str = "") -> None:
        done = _number(done, "done")
        if total is not None:
            total = _number(total, "total")
        with self.lock:
            self.done, self.total = done, total
            self.note = str(note)[:NOTE_CHARS]
            self._touch()

    def set_note(self, note: str) -> None:
        with self.lock:
            self.note = str(note)[:NOTE_CHARS]
            self._touch()

    def log(self, message: object) -> None:
        text = str(message)
        with self.lock:
            for line in text.splitlines() or [""]:
                if len(line.encode()) > LOG_BYTES:
                    line = line.encode()[: LOG_BYTES - 3].decode(errors="ignore") + "…"
                self.lines.append(line)
                self.size += len(line.encode()) + 1
            while len(self.lines) > LOG_LINES or self.size > LOG_BYTES:
                self.size -= len(self.lines.popleft().encode()) + 1
            self._touch()

    def said(self) -> Said | None:
        """What to write with the outcome: None when the operation never reported."""
        with self.lock:
            if not self.used:
                return None
            return Said(self.done, self.total, self.note, "\n".join(self.lines))

    def due(self, now: float) -> tuple[int, Said] | None:
        """(its change number, what it says) when it changed and was not written for FLUSH_S."""
        with self.lock:
            if self.changed == self.written or now - self.written_at < FLUSH_S:
                return None
            return self.changed, Said(self.done, self.total, self.note, "\n".join(self.lines))

    def mark_written(self, change: int, now: float) -> None:
        with self.lock:
            self.written = max(self.written, change)
            self.written_at = now

    def _touch(self) -> None:
        self.used = True
        self.changed += 1


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"progress {name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Reports:
    """The reports of the operations a process runs, and their writer (called from a heartbeat
    thread every fraction of a second)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[int, tuple[str, int, Report]] = {}  # operation id -> (batch id, attempt, report)

    def add(self, batch_id: str, operation_id: int, attempt: int, report: Report) -> None:
        with self.lock:
            self.live[operation_id] = (batch_id, attempt, report)

    def remove(self, operation_id: int) -> None:
        with self.lock:
            self.live.pop(operation_id, None)

    def flush(self) -> None:
        now = time.monotonic()
        with self.lock:
            entries = list(self.live.items())
        writes = []
        for operation_id, (batch_id, attempt, report) in entries:
            due = report.due(now)
            if due is not None:
                writes.append((batch_id, operation_id, attempt, report, *due))
        if not writes:
            return
        services.operations_report(
            reports=[(operation_id, attempt, said) for _, operation_id, attempt, _, _, said in writes]
        )
        for _, _, _, report, change, _ in writes:
            report.mark_written(change, now)
        for batch_id in {write[0] for write in writes}:
            publisher.operations_reported(batch_id)
