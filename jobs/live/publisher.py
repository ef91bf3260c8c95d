"""The one place that talks to the channel layer.

Services call `batch_changed()` inside their transaction; the event leaves after commit. Each
process has one publisher thread running an asyncio loop: a sync `async_to_sync` group send costs
a new loop and connection per call (about 220/s), one loop keeps them. Status changes go at once;
progress is coalesced per batch to one event per BATCHSITE_PROGRESS_INTERVAL_S across all
processes (a Redis SET NX PX token), always sending the latest counters on the trailing edge.
"""

import asyncio
import atexit
import logging
import os
import threading
from typing import Any

import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from jobs.outage import OutageLog

logger = logging.getLogger(__name__)


def batch_group(batch_id: Any) -> str:
    return f"batch-{batch_id}"


def owner_group(owner_id: Any) -> str:
    return f"owner-{owner_id}"


def team_group(team_id: Any) -> str:
    return f"team-{team_id}"


def audience_group(payload: dict[str, Any]) -> str:
    """Whose dashboards hear a batch: its team's members for a team's batch, else its owner."""
    return team_group(payload["team_id"]) if payload.get("team_id") else owner_group(payload["owner_id"])


# Every batch's events also go here: staff dashboards show everyone's batches.
ALL_GROUP = "batches-all"


def batch_snapshot(batch) -> dict[str, Any]:
    """What an event carries: which batch, its status, and the version that orders events. Consumers
    read the rest from the database when they render, so a missed event cannot leave a page wrong;
    `owner_id` and `team_id` only route the event to the owner's or the team's group and are not sent."""
    return {
        "batch_id": str(batch.id),
        "owner_id": batch.owner_id,
        "team_id": batch.team_id,
        "version": batch.version,
        "status": batch.status,
    }


def batch_changed(batch, *, status_changed: bool = False) -> None:
    """Publish the batch's state after the current transaction commits (nothing if it rolls back)."""
    payload = batch_snapshot(batch)
    transaction.on_commit(lambda: publisher().submit(payload, urgent=status_changed))


def operations_reported(batch_id: Any) -> None:
    """Running operations of the batch wrote progress or log lines (no transition, so the batch's
    version did not move): its batch and operation pages read them again."""
    publisher().submit_reported(str(batch_id))


def flush(timeout: float = 5.0) -> None:
    """Send everything still coalescing; call before a process exits (RQ horses skip atexit)."""
    if _publisher is not None and _publisher.pid == os.getpid():
        _publisher.flush(timeout)


class Publisher:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.interval = settings.BATCHSITE_PROGRESS_INTERVAL_S
        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        self.latest: dict[str, dict[str, Any]] = {}
        self.timers: dict[str, asyncio.TimerHandle] = {}
        # Batches with a progress send on its way (a task or a timer): at most one each, so a burst
        # of transitions costs one throttle round trip, not one per transition.
        self.scheduled: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.redis: aioredis.Redis | None = None
        self.outage = OutageLog(logger, "Redis (live events)")
        self.thread = threading.Thread(target=self.loop.run_forever, name="batchsite-events", daemon=True)
        self.thread.start()

    def submit(self, payload: dict[str, Any], *, urgent: bool) -> None:
        self.loop.call_soon_threadsafe(self._accept, payload, urgent)

    def submit_reported(self, batch_id: str) -> None:
        message = {"type": "operation.progress", "batch_id": batch_id}
        self.loop.call_soon_threadsafe(self._spawn, self._send_to(batch_group(batch_id), message))

    async def _send_to(self, group: str, message: dict[str, Any]) -> None:
        try:
            await self.layer.group_send(group, message)
        except Exception:
            logger.warning("events: could not publish to %s", group, exc_info=True)

    def flush(self, timeout: float) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._flush(), self.loop).result(timeout)
        except Exception:
            logger.warning("events: flush did not finish within %ss", timeout, exc_info=True)

    def _accept(self, payload: dict[str, Any], urgent: bool) -> None:
        batch_id = payload["batch_id"]
        previous = self.latest.get(batch_id)
        if previous is not None and previous["version"] > payload["version"]:
            payload = {**previous}
        payload["kind"] = "status" if urgent or (previous and previous.get("kind") == "status") else "progress"
        self.latest[batch_id] = payload
        if urgent:
            self._send(batch_id)
        elif batch_id not in self.scheduled:
            self.scheduled.add(batch_id)
            self._spawn(self._send_progress(batch_id))

    async def _send_progress(self, batch_id: str) -> None:
        if batch_id not in self.latest:
            self.scheduled.discard(batch_id)
            return
        if self.interval > 0:
            wait_ms = await self._throttle_wait_ms(batch_id)
            if wait_ms > 0:
                self._cancel_timer(batch_id)
                self.timers[batch_id] = self.loop.call_later(wait_ms / 1000, self._retry_progress, batch_id)
                return
        self._send(batch_id)

    def _retry_progress(self, batch_id: str) -> None:
        self.timers.pop(batch_id, None)
        self._spawn(self._send_progress(batch_id))

    def _cancel_timer(self, batch_id: str) -> None:
        timer = self.timers.pop(batch_id, None)
        if timer is not None:
            timer.cancel()

    async def _throttle_wait_ms(self, batch_id: str) -> int:
        """0 if this process may send now (it took the token), else the ms until the token frees."""
        try:
            if self.redis is None:
                self.redis = aioredis.from_url(settings.REDIS_URL)
            key = f"{settings.BATCHSITE_REDIS_PREFIX}:throttle:{batch_id}"
            interval_ms = max(1, int(self.interval * 1000))
            if await self.redis.set(key, 1, nx=True, px=interval_ms):
                self.outage.succeeded()
                return 0
            wait = max(1, int(await self.redis.pttl(key)))
            self.outage.succeeded()
            return wait
        except Exception as exc:
            self.outage.failed(exc)  # sent unthrottled meanwhile
            return 0

    def _send(self, batch_id: str) -> None:
        self._cancel_timer(batch_id)
        self.scheduled.discard(batch_id)
        payload = self.latest.pop(batch_id, None)
        if payload is not None:
            self._spawn(self._deliver(payload))

    def _spawn(self, coroutine) -> None:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        message = {
            "type": f"batch.{payload['kind']}",
            "batch_id": payload["batch_id"],
            "status": payload["status"],
            "version": payload["version"],
        }
        for group in (batch_group(payload["batch_id"]), audience_group(payload), ALL_GROUP):
            try:
                await self.layer.group_send(group, message)
            except Exception as exc:
                # Pages re-read the truth on reconnect, so a lost event costs nothing lasting.
                self.outage.failed(exc)
                return
        self.outage.succeeded()

    async def _flush(self) -> None:
        for batch_id in list(self.latest):
            self._send(batch_id)
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    global _publisher
    with _publisher_lock:
        # A forked process (an RQ work horse) inherits the object but not its thread.
        if _publisher is None or _publisher.pid != os.getpid():
            _publisher = Publisher()
            atexit.register(_publisher.flush, 5.0)
        return _publisher
