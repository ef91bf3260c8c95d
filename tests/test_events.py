"""Events reach the real channel layer (Redis) after commit: status at once, progress coalesced."""

import asyncio
import threading
import time

import pytest
from channels.layers import get_channel_layer
from django.db import transaction

from jobs import services
from jobs.live import publisher
from tests.conftest import wait_for


class GroupListener:
    """Subscribes to channel-layer groups in its own event loop and collects what arrives."""

    def __init__(self, *groups: str) -> None:
        self.groups = groups
        self.messages: list[dict] = []
        self.ready = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "listener did not subscribe"

    async def _listen(self) -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        for group in self.groups:
            await layer.group_add(group, channel)
        # group_add returns before Redis confirms the SUBSCRIBE: a probe round trip proves it.
        for group in self.groups:
            while True:
                await layer.group_send(group, {"type": "probe"})
                try:
                    if (await asyncio.wait_for(layer.receive(channel), 0.5))["type"] == "probe":
                        break
                except TimeoutError:
                    continue
        self.ready.set()
        while not self.stopping:
            try:
                message = await asyncio.wait_for(layer.receive(channel), 0.1)
            except TimeoutError:
                continue
            if message["type"] != "probe":
                message["received_at"] = time.time()
                self.messages.append(message)
        for group in self.groups:
            await layer.group_discard(group, channel)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]


@pytest.fixture
def listen():
    listeners = []

    def start(*groups: str) -> GroupListener:
        listener = GroupListener(*groups)
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.close()


def noop_batch(owner, count=3, **options):
    return services.batch_create(
        owner=owner, type="noop", name="events", items=[f"i{n}" for n in range(count)], **options
    )


@pytest.mark.django_db(transaction=True)
def test_a_new_batch_is_announced_to_its_owner_after_commit(alice, bob, redis_clean, listen):
    alices, bobs = listen(publisher.owner_group(alice.pk)), listen(publisher.owner_group(bob.pk))
    batch = noop_batch(alice)
    message = wait_for(lambda: alices.of_type("batch.status"), 5, message="status event")[0]
    batch.refresh_from_db()
    assert message["batch_id"] == str(batch.pk)
    assert (message["status"], message["version"]) == ("queued", batch.version)
    # Only what consumers read: they render the rest from the database.
    assert set(message) - {"received_at"} == {"type", "batch_id", "status", "version"}  # received_at: the listener's
    time.sleep(0.3)
    assert bobs.messages == []


@pytest.mark.django_db(transaction=True)
def test_nothing_is_published_when_the_transaction_rolls_back(alice, redis_clean, listen):
    batch = noop_batch(alice, start=False)
    listener = listen(publisher.batch_group(batch.pk))
    with pytest.raises(RuntimeError), transaction.atomic():
        services.batch_cancel(batch=batch)
        raise RuntimeError("roll back")
    time.sleep(0.5)
    assert listener.messages == []
    batch.refresh_from_db()
    assert batch.status == "pending"


@pytest.mark.django_db(transaction=True)
def test_progress_is_coalesced_and_the_last_state_always_arrives(alice, redis_clean, listen):
    batch = noop_batch(alice, count=300, max_parallel=100, start=False)
    listener = listen(publisher.batch_group(batch.pk))
    services.batch_start(batch=batch)
    started = time.monotonic()
    for _ in range(300):
        claim = services.operation_claim_next(batch_id=str(batch.pk), worker="events-test")
        services.operation_complete(claim=claim, duration_ms=1)
    elapsed = time.monotonic() - started
    final = wait_for(
        lambda: [m for m in listener.messages if m["status"] == "completed"], 5, message="the completed event"
    )[-1]
    batch.refresh_from_db()
    assert (batch.completed, batch.percent_complete) == (300, 100)
    # The last state always arrives: the final event carries the batch's last version.
    assert final["type"] == "batch.status" and final["version"] == batch.version
    progress = listener.of_type("batch.progress")
    # 600 transitions; at most one progress event per 0.2 s (plus the trailing one).
    assert len(progress) <= elapsed / 0.2 + 2, (len(progress), elapsed)
    versions = [m["version"] for m in listener.messages]
    assert versions == sorted(versions)


@pytest.mark.workers
def test_events_from_worker_processes_reach_subscribers(alice, workers, listen):
    listener = listen(publisher.owner_group(alice.pk))
    workers.start(2)
    batch = services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="live",
        items=[f"i{n}" for n in range(40)],
        params={"duration_ms": 25},
        max_parallel=2,
    )
    wait_for(lambda: [m for m in listener.messages if m["status"] == "completed"], 60, message="completed event")
    # Processes publish independently, so arrival order may differ from commit order: the
    # version (bumped by every transition) gives the order subscribers rely on.
    statuses = [m["status"] for m in sorted(listener.of_type("batch.status"), key=lambda m: m["version"])]
    seen = [(m["type"], m["status"], m["version"]) for m in listener.messages]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "completed", seen
    assert listener.of_type("batch.progress"), "no progress event from the workers"
    span = listener.messages[-1]["received_at"] - listener.messages[0]["received_at"]
    progress = listener.of_type("batch.progress")
    # Two worker processes share one throttle per batch: about 5 progress events a second.
    assert len(progress) <= span / 0.2 + 3, (len(progress), span)
    assert all(m["batch_id"] == str(batch.pk) for m in listener.messages)
