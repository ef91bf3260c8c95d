"""WebSocket consumers against the real Redis channel layer: auth, isolation, the state on
connect, and fragments pushed when services change a batch."""

import asyncio
import re
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from batchsite.asgi import application
from jobs import services
from jobs.live.consumers import FORBIDDEN

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def session_headers(user) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://testserver")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


async def connect(path: str, user) -> WebsocketCommunicator:
    headers = await sync_to_async(session_headers)(user)
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator: WebsocketCommunicator, needle: str, timeout: float = 10) -> str:
    """Messages until one contains `needle` (earlier ones may be older states)."""
    while True:
        message = await communicator.receive_from(timeout=timeout)
        if needle in message:
            return message


@sync_to_async
def create_batch(owner, count=3, name="live", type="noop"):
    return services.batch_create(owner=owner, type=type, name=name, items=[f"item-{n}" for n in range(count)])


async def test_an_anonymous_socket_is_closed_with_4403(redis_clean, alice):
    batch = await create_batch(alice)
    for path in (f"/ws/batches/{batch.pk}/", "/ws/dashboard/"):
        communicator = await connect(path, None)
        assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": FORBIDDEN}
        await communicator.disconnect()


async def test_another_users_batch_is_refused(redis_clean, alice, bob):
    batch = await create_batch(alice)
    communicator = await connect(f"/ws/batches/{batch.pk}/", bob)
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": FORBIDDEN}
    await communicator.disconnect()


async def test_a_socket_without_origin_is_rejected(redis_clean, alice):
    batch = await create_batch(alice)
    communicator = WebsocketCommunicator(application, f"/ws/batches/{batch.pk}/")
    connected, _ = await communicator.connect()
    assert not connected


async def test_on_connect_the_page_gets_the_current_state(redis_clean, alice):
    batch = await create_batch(alice, count=4)
    communicator = await connect(f"/ws/batches/{batch.pk}/", alice)
    message = await communicator.receive_from(timeout=5)
    assert message.startswith(f'<section id="batch-{batch.pk}-live"')
    assert 'hx-swap-oob="true"' in message
    assert "chip-queued" in message and "4 operations" in message
    await communicator.disconnect()


async def test_a_status_change_is_pushed_with_the_new_chip_and_actions(redis_clean, alice):
    batch = await create_batch(alice)
    communicator = await connect(f"/ws/batches/{batch.pk}/", alice)
    await communicator.receive_from(timeout=5)
    await sync_to_async(services.batch_pause)(batch=batch, by=alice)
    message = await receive_until(communicator, "chip-paused")
    assert ">Resume</button>" in message and ">Pause</button>" not in message
    await communicator.disconnect()


def row_ids(message: str) -> list[int]:
    return [int(n) for n in re.findall(r'role="row" id="op-(\d+)" hx-swap-oob="true"', message)]


@sync_to_async
def complete_next(batch, duration_ms=1234) -> int:
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_complete(claim=claim, duration_ms=duration_ms, result={})
    return claim.operation_id


async def test_a_finished_operation_pushes_its_row_with_the_counts_in_one_message(redis_clean, alice):
    batch = await create_batch(alice, count=2)
    communicator = await connect(f"/ws/batches/{batch.pk}/", alice)
    first = await communicator.receive_from(timeout=5)
    assert len(row_ids(first)) == 2  # on connect: the whole page
    operation_id = await complete_next(batch)
    message = await receive_until(communicator, "1.2 s")
    assert message.startswith(f'<section id="batch-{batch.pk}-live"')
    assert row_ids(message) == [operation_id]  # only the row that changed
    assert "chip-completed" in message
    await communicator.disconnect()


async def test_only_the_rows_of_the_page_shown_are_sent(redis_clean, alice):
    batch = await create_batch(alice, count=60)
    communicator = await connect(f"/ws/batches/{batch.pk}/?page=2&status=", alice)
    first = await communicator.receive_from(timeout=5)
    page_two = row_ids(first)
    assert len(page_two) == 10
    first_on_page_one = await complete_next(batch)
    message = await receive_until(communicator, "1 %")
    assert first_on_page_one not in page_two and row_ids(message) == []
    await communicator.disconnect()


async def test_the_dashboard_gets_its_state_on_connect_and_new_batches_first(redis_clean, alice, bob):
    existing = await create_batch(alice, name="existing")
    communicator = await connect("/ws/dashboard/", alice)
    first = await communicator.receive_from(timeout=5)
    assert first.startswith('<section id="dashboard-tiles"') and 'hx-swap-oob="true"' in first
    assert f"batch-{existing.pk}-card" in first
    recent = await communicator.receive_from(timeout=5)
    assert recent.startswith('<tbody id="recent-batches" hx-swap-oob="true">')

    await create_batch(bob, name="bobs")
    fresh = await create_batch(alice, name="fresh")
    message = await receive_until(communicator, f"batch-{fresh.pk}-card")
    assert message.startswith('<section id="dashboard-tiles"')
    assert message.index(f"batch-{fresh.pk}-card") < message.index(f"batch-{existing.pk}-card")
    assert "bobs" not in message
    await communicator.disconnect()


@sync_to_async
def finish_all(batch):
    while isinstance(claim := services.operation_claim_next(batch_id=str(batch.pk), worker="test"), services.Claim):
        services.operation_complete(claim=claim, duration_ms=5)


async def test_a_finished_batch_leaves_the_active_list_at_once(redis_clean, alice):
    batch = await create_batch(alice, count=1, name="short")
    communicator = await connect("/ws/dashboard/", alice)
    assert f"batch-{batch.pk}-card" in await communicator.receive_from(timeout=5)
    await communicator.receive_from(timeout=5)
    await finish_all(batch)
    message = await receive_until(communicator, '<span class="tile-n">0</span><span class="muted">active now')
    assert f"batch-{batch.pk}-card" not in message and 'id="no-active"' in message
    recent = await communicator.receive_from(timeout=5)
    assert recent.startswith('<tbody id="recent-batches"') and "short" in recent
    # A late progress event of the finished batch does not bring its card back.
    from jobs.live.consumers import DashboardConsumer

    assert DashboardConsumer._card(SimpleNamespace(shown=set()), await refreshed(batch)) == ""
    await communicator.disconnect()


@sync_to_async
def refreshed(batch):
    batch.refresh_from_db()
    return batch


async def test_a_staff_dashboard_gets_each_event_once(redis_clean, staff, monkeypatch):
    """The publisher sends a staff member's own batch to their owner group and to the all-batches
    group: the dashboard must be in only one of them. Counted per batch id, so events of other
    batches (from other processes) cannot blur the count."""
    from jobs.live import publisher
    from jobs.live.consumers import DashboardConsumer

    handled: list[str] = []
    original = DashboardConsumer.batch_progress

    async def counting(self, event):
        handled.append(event["batch_id"])
        await original(self, event)

    monkeypatch.setattr(DashboardConsumer, "batch_progress", counting)
    communicator = await connect("/ws/dashboard/", staff)
    await communicator.receive_from(timeout=5)
    await communicator.receive_from(timeout=5)
    marker = "no-such-batch-" + str(staff.pk)
    publisher.publisher().submit(
        {"batch_id": marker, "owner_id": staff.pk, "version": 1, "status": "running"}, urgent=False
    )
    deadline = asyncio.get_running_loop().time() + 5
    while marker not in handled and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # time for a second copy to arrive, if one were sent
    assert handled.count(marker) == 1
    await communicator.disconnect()


async def test_a_staff_dashboard_follows_every_owner(redis_clean, alice, staff):
    communicator = await connect("/ws/dashboard/", staff)
    await communicator.receive_from(timeout=5)
    await communicator.receive_from(timeout=5)
    batch = await create_batch(alice, name="alices")
    await receive_until(communicator, f"batch-{batch.pk}-card")
    await communicator.disconnect()


async def test_the_analytics_tab_gets_fresh_figures_when_the_status_changes(redis_clean, alice):
    batch = await create_batch(alice, count=1)
    communicator = await connect(f"/ws/batches/{batch.pk}/?tab=analytics", alice)
    first = await communicator.receive_from(timeout=5)
    assert f'<div id="batch-{batch.pk}-analytics" class="analytics" hx-swap-oob="true">' in first
    assert "<dt>Success rate</dt><dd>0 %</dd>" in first
    await complete_next(batch)  # the only operation: the batch completes (a status event)
    # On a slow machine the claim's progress event may come after the analytics refresh interval
    # and bring analytics too; the status event's message is the one with the completed chip.
    message = await receive_until(communicator, "chip-completed")
    assert "<dt>Success rate</dt><dd>100 %</dd>" in message and 'role="row"' not in message
    await communicator.disconnect()


async def test_the_pages_of_a_batch_share_one_read_per_event(redis_clean, alice, monkeypatch):
    from jobs.live import snapshots

    batch = await create_batch(alice)
    pages = [await connect(f"/ws/batches/{batch.pk}/", alice) for _ in range(5)]
    for page in pages:
        await page.receive_from(timeout=5)
    reads = []
    read = snapshots._read

    async def counted(*args):
        reads.append(args)
        return await read(*args)

    monkeypatch.setattr(snapshots, "_read", counted)
    await sync_to_async(services.batch_pause)(batch=batch, by=alice)
    for page in pages:
        assert ">Resume</button>" in await receive_until(page, "chip-paused")
        await page.disconnect()
    assert len(reads) == 1


async def test_added_operations_appear_in_the_open_page_with_the_new_totals(redis_clean, alice):
    batch = await create_batch(alice, count=2)
    communicator = await connect(f"/ws/batches/{batch.pk}/?tab=operations", alice)
    await receive_until(communicator, f"batch-{batch.pk}-live")
    await sync_to_async(services.batch_add_operations)(batch_id=batch.pk, items=["added-1", "added-2"], by=alice)
    message = await receive_until(communicator, 'id="operation-rows"')
    assert "added-1" in message and "added-2" in message and "item-0" in message
    assert "4 operations" in message
    await communicator.disconnect()


async def test_a_page_filtered_by_error_type_follows_only_those_rows(redis_clean, alice):
    def failed_batch():
        batch = services.batch_create(owner=alice, type="noop", name="errs", items=["a", "b", "c"])
        kinds = {1: "Timeout", 2: "Refused", 3: "Timeout"}
        while isinstance(claim := services.operation_claim_next(batch_id=str(batch.pk), worker="t"), services.Claim):
            services.operation_fail(
                claim=claim, error="no", error_type=kinds[claim.seq], duration_ms=1, retryable=False
            )
        return batch, {op.seq: op.pk for op in batch.operations.all()}

    batch, ids = await sync_to_async(failed_batch)()
    communicator = await connect(f"/ws/batches/{batch.pk}/?tab=operations&status=failed&error_type=Timeout", alice)
    first = await communicator.receive_from(timeout=5)
    assert f'id="op-{ids[1]}"' in first and f'id="op-{ids[3]}"' in first
    assert f'id="op-{ids[2]}"' not in first
    await communicator.disconnect()
