"""Batches that grow, chain, expire and drain, on real workers: the counters are
checked at every step, on the database the suite runs on."""

import time

import pytest
from django.db import connection, transaction

import tests.growth_optypes  # noqa: F401  (registers test.crawl in this process)
from jobs import services
from jobs.models import Batch
from tests.conftest import wait_for
from tests.invariants import assert_counters_match_rows, finished_events

pytestmark = pytest.mark.workers


@pytest.fixture
def pool(workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.growth_optypes"
    workers.start(2)
    return workers


def sleeps(owner, count: int, duration_ms: int, **options) -> Batch:
    options.setdefault("name", "growth")
    items = [f"op-{n}" for n in range(1, count + 1)]
    return services.batch_create(
        owner=owner,
        type="demo.sleep",
        items=items,
        params={"duration_ms": duration_ms, **options.pop("params", {})},
        **options,
    )


def state(batch: Batch) -> Batch:
    """The batch, its counters checked against its rows in one snapshot while workers write (on
    PostgreSQL two statements of READ COMMITTED could see two different commits)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert_counters_match_rows(batch)
    return batch


def until(batch: Batch, predicate, message: str, timeout: float = 60) -> Batch:
    def check():
        state(batch)
        return predicate(batch)

    wait_for(check, timeout, message=f"{batch.name}: {message}")
    return batch


def test_batches_grow_while_they_run_by_hand_and_from_their_own_operations(alice, pool):
    grown = sleeps(alice, 4, 300, max_parallel=2, name="grown")
    crawler = services.batch_create(
        owner=alice, type="test.crawl", name="crawler", items=["a:3", "b:2"], max_parallel=3
    )
    until(grown, lambda b: b.running == 2, "running")
    services.batch_add_operations(batch_id=grown.pk, items=["late-1", "late-2", "late-3"], by=alice)
    assert state(grown).total == 7
    until(grown, lambda b: b.is_terminal, "finished")
    assert (grown.status, grown.completed, grown.percent_complete) == ("completed", 7, 100)
    assert finished_events(grown) == 1

    until(crawler, lambda b: b.is_terminal, "finished")
    labels = sorted(crawler.operations.values_list("label", flat=True))
    assert labels == ["a1:0", "a2:0", "a3:0", "a:3", "b1:0", "b2:0", "b:2"]
    assert (crawler.status, crawler.total, crawler.completed) == ("completed", 7, 7)
    assert crawler.events.filter(kind="extended", message__contains="by #").count() == 2

    services.batch_add_operations(batch_id=crawler.pk, items=["c:1"], by=alice, reopen=True)
    until(crawler, lambda b: b.is_terminal, "finished again")
    assert (crawler.status, crawler.total, crawler.completed) == ("completed", 9, 9)
    assert finished_events(crawler) == 2


def test_chains_run_in_order_and_stop_where_their_condition_cannot_hold(alice, pool):
    first, middle, last = services.chain_create(
        owner=alice,
        bodies=[
            {"type": "demo.sleep", "name": "extract", "items": ["a", "b"], "params": {"duration_ms": 50}},
            {"type": "demo.sleep", "name": "transform", "items": ["c"], "params": {"failure_rate": 1}},
            {"type": "demo.sleep", "name": "load", "items": ["d"]},
        ],
    )
    broken = sleeps(alice, 2, 50, name="broken", params={"failure_rate": 1})
    cleanup = services.batch_create(
        owner=alice, type="noop", name="cleanup", items=["x"], after=broken.pk, after_condition="failed"
    )
    assert state(last).status == "waiting" and state(cleanup).status == "waiting"
    until(last, lambda b: b.is_terminal, "ended")
    assert [state(b).status for b in (first, middle, last)] == ["completed", "failed", "cancelled"]
    assert first.finished_at <= middle.started_at, "the middle one started after the first ended"
    assert "transform" in last.cancel_reason and last.started_at is None and last.skipped == 1
    until(cleanup, lambda b: b.is_terminal, "ended")
    assert (state(broken).status, cleanup.status, cleanup.completed) == ("failed", "completed", 1)


def test_a_deadline_expires_a_batch_and_a_drain_lets_running_operations_finish(alice, pool):
    # 16 x 300 ms two at a time take 2.4 s at best: the 2 s deadline passes first, after some finished.
    expiring = sleeps(alice, 16, 300, max_parallel=2, deadline_s=2, name="expiring")
    draining = sleeps(alice, 6, 1500, max_parallel=2, name="draining")
    until(draining, lambda b: b.running == 2, "running")
    started = time.monotonic()
    services.batch_cancel(batch=draining, by=alice, mode="drain")
    assert state(draining).status == "cancelling" and draining.skipped == 4
    until(draining, lambda b: b.is_terminal, "drained")
    assert time.monotonic() - started > 0.5, "the running operations were not cut short"
    assert (draining.status, draining.completed, draining.skipped, draining.failed) == ("cancelled", 2, 4, 0)
    assert set(draining.operations.filter(status="completed").values_list("worker", flat=True)) != {""}

    until(expiring, lambda b: b.is_terminal, "expired")
    completed = expiring.operations.filter(status="completed")
    assert expiring.status == "expired" and 1 <= expiring.completed < 16
    assert expiring.completed == completed.count() and expiring.skipped == 16 - expiring.completed
    assert all(op.result is not None for op in completed), "finished results are kept"
    assert expiring.events.filter(kind="expired").count() == 1 and finished_events(expiring) == 0
    time.sleep(0.5)  # a stopped operation's late outcome must change nothing
    assert state(expiring).completed == completed.count()
