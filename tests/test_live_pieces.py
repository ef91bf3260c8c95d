"""Parts of the batch page that other batches or features change: the chain card follows the
status of every batch of its chain, and the Notifications tab shows new deliveries live."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from jobs import services
from jobs.notifications.models import Delivery
from tests.test_consumers import connect, receive_until

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@sync_to_async
def make_chain(owner):
    return services.chain_create(
        owner=owner,
        bodies=[
            {"type": "noop", "name": "chain-A", "items": ["a"]},
            {"type": "noop", "name": "chain-B", "items": ["b"]},
        ],
    )


async def test_the_chain_card_follows_the_other_batches_of_the_chain(redis_clean, alice):
    first, second = await make_chain(alice)
    communicator = await connect(f"/ws/batches/{first.pk}/", alice)
    await communicator.receive_from(timeout=5)
    await sync_to_async(services.batch_cancel)(batch=second, by=alice)
    message = await receive_until(communicator, 'chain-B</a> <span class="chip chip-cancelled">')
    assert message.startswith(f'<nav class="card chain" id="batch-{first.pk}-chain"')
    await communicator.disconnect()


@sync_to_async
def add_delivery(batch):
    return Delivery.objects.create(
        batch=batch,
        channel="webhook",
        event_name="batch.finished",
        target="https://hooks.example.com/in",
        give_up_at=timezone.now() + timedelta(hours=1),
    )


async def test_the_notifications_tab_shows_a_new_delivery_without_a_reload(redis_clean, alice):
    batch = (await make_chain(alice))[0]
    communicator = await connect(f"/ws/batches/{batch.pk}/?tab=notifications", alice)
    await receive_until(communicator, f'id="batch-{batch.pk}-live"')
    delivery = await add_delivery(batch)
    message = await receive_until(communicator, 'id="notification-deliveries"')
    assert f'id="delivery-{delivery.pk}"' in message and "hooks.example.com" in message
    await communicator.disconnect()
