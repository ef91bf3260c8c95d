"""Races and outages at the edge of the service layer: one batch per Idempotency-Key however
many requests race with it, and a Redis outage that never turns a committed change into an error."""

import threading

import pytest
import redis.exceptions
from django.db import connections

from jobs import services
from jobs.engine import dispatch, reaper
from jobs.models import Batch, BatchStatus, IdempotencyRecord
from tests.test_api import BATCHES, ApiClient

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_creations_with_one_idempotency_key_make_one_batch(alice, redis_clean):
    start = threading.Barrier(20)
    made: list[str] = []
    failures: list[BaseException] = []

    def create() -> None:
        try:
            start.wait(timeout=30)
            batch = services.batch_create(
                owner=alice, type="noop", items=["a", "b", "c"], name="once", idempotency=("key-1", "hash-1"),
                rate_limit=False,
            )  # fmt: skip
            made.append(str(batch.pk))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:3]
    assert len(made) == 20 and len(set(made)) == 1
    assert Batch.objects.count() == 1 and Batch.objects.get().total == 3
    assert IdempotencyRecord.objects.filter(key="key-1").count() == 1


def test_an_expired_idempotency_record_makes_way_for_a_new_batch(alice):
    from datetime import timedelta

    from django.utils import timezone

    first = services.batch_create(owner=alice, type="noop", items=["a"], name="n", idempotency=("k", "h"))
    IdempotencyRecord.objects.filter(key="k").update(created_at=timezone.now() - timedelta(hours=25))
    second = services.batch_create(owner=alice, type="noop", items=["a"], name="n", idempotency=("k", "h"))
    assert second.pk != first.pk
    assert IdempotencyRecord.objects.get(key="k").batch_id == second.pk


@pytest.fixture
def redis_down(settings):
    """Redis does not answer for the code under test (the tests' own Redis stays untouched) until
    the test calls the function this yields."""
    working = settings.RQ_QUEUES
    settings.RQ_QUEUES = {name: {**config, "URL": DEAD_REDIS} for name, config in working.items()}
    with pytest.raises(redis.exceptions.ConnectionError):
        dispatch.redis_connection().ping()

    def back() -> None:
        settings.RQ_QUEUES = working

    yield back
    back()


@pytest.mark.django_db(transaction=True)
def test_a_batch_created_while_redis_is_down_is_a_201_and_gets_its_lanes_when_redis_is_back(
    alice, redis_clean, redis_down
):
    client = ApiClient(alice)
    try:
        response = client.post(BATCHES, {"name": "in the outage", "type": "noop", "items": ["a", "b"]})
        assert response.status_code == 201, response.content
        # An Idempotency-Key retry during the outage gets the same batch, not a second one.
        again = client.post(BATCHES, {"name": "again", "type": "noop", "items": ["a"]}, HTTP_IDEMPOTENCY_KEY="retry-1")
        retried = client.post(
            BATCHES, {"name": "again", "type": "noop", "items": ["a"]}, HTTP_IDEMPOTENCY_KEY="retry-1"
        )
        assert again.status_code == retried.status_code == 201 and again.json()["id"] == retried.json()["id"]
    finally:
        redis_down()
    batch = Batch.objects.get(pk=response.json()["id"])
    assert batch.status == BatchStatus.QUEUED and batch.pending == 2
    assert Batch.objects.count() == 2
    assert dispatch.live_lane_count(str(batch.pk)) == 0

    report = reaper.reap()
    assert report.restarted_lanes >= 2  # one lane or more for each of the two batches
    assert dispatch.live_lane_count(str(batch.pk)) >= 1


@pytest.mark.django_db(transaction=True)
def test_cancelling_while_redis_is_down_is_kept_and_answered(alice, redis_clean, redis_down):
    client = ApiClient(alice)
    created = client.post(BATCHES, {"name": "c", "type": "noop", "items": ["a", "b"]})
    assert created.status_code == 201
    cancelled = client.post(f"{BATCHES}/{created.json()['id']}/cancel", {})
    assert cancelled.status_code == 200, cancelled.content
    assert Batch.objects.get(pk=created.json()["id"]).status == BatchStatus.CANCELLED


def test_a_redis_error_inside_an_api_route_is_a_503_with_retry_after(alice, monkeypatch):
    from jobs import selectors

    def unreachable(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(selectors, "batch_get_visible", unreachable)
    response = ApiClient(alice).get(f"{BATCHES}/00000000-0000-0000-0000-000000000001")
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5" and "Redis" in response.json()["message"]
