"""`async def` operation types: run on the worker's event loop, many more at once than its threads,
with the same contract (outcomes, failures, timeouts and cancels as cancellation)."""

import pytest

import tests.engine_three_optypes  # noqa: F401  (registers the types in this process)
from jobs import services
from jobs.engine.lane import Lane
from jobs.models import Batch
from tests.conftest import wait_for
from tests.invariants import assert_counters_match_rows
from tests.test_engine import wait_until_finished
from tests.test_limits import most_at_once


@pytest.mark.workers
def test_async_operations_run_on_the_event_loop_beyond_the_worker_threads(alice, workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.engine_three_optypes"
    workers.env["BATCHSITE_WORKER_CONCURRENCY"] = "2"
    workers.start(1)
    batch = services.batch_create(
        owner=alice,
        type="example.nap",
        name="naps",
        items=[f"nap-{n}" for n in range(30)] + ["fail"],
        params={"sleep_s": 0.5},
        max_parallel=40,
    )
    wait_until_finished(batch)
    assert batch.status == "partial_success"
    assert_counters_match_rows(batch)
    done = [op for op in batch.operations.all() if op.status == "completed"]
    assert len(done) == 30
    assert {op.result["thread"] for op in done} == {"batchsite-async"}
    # Two threads could run two at once; the loop ran many more.
    assert most_at_once([(op.result["start"], op.result["end"]) for op in done]) > 2
    failed = batch.operations.get(label="fail")
    assert (failed.error_type, failed.error) == ("Grumpy", "woke up wrong")
    assert failed.progress_note == "still napping"


@pytest.mark.workers
def test_an_async_operation_past_its_timeout_or_cancelled_is_cancelled(alice, workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.engine_three_optypes"
    # Room for two: the next batch runs only once the cancelled runs gave theirs back.
    workers.env["BATCHSITE_WORKER_ASYNC_CONCURRENCY"] = "2"
    workers.start(1)
    timed = services.batch_create(owner=alice, type="example.nap", name="hangs", items=["hang"], timeout_s=1)
    wait_until_finished(timed)
    operation = timed.operations.get()
    assert (timed.status, operation.error_type) == ("failed", "Timeout")
    cancelled = services.batch_create(owner=alice, type="example.nap", name="cancel me", items=["hang", "hang-2"])
    wait_for(lambda: Batch.objects.get(pk=cancelled.pk).running == 2, 30, message="the hangs to start")
    services.batch_cancel(batch=cancelled, by=alice)
    wait_until_finished(cancelled)
    assert cancelled.status == "cancelled"
    # The loop goes on: its room was freed, the next batch runs.
    after = services.batch_create(
        owner=alice, type="example.nap", name="after", items=["a", "b"], params={"sleep_s": 0}
    )
    wait_until_finished(after)
    assert after.status == "completed"


def test_an_async_type_runs_in_a_lane_outside_a_worker_too(transactional_db, alice, redis_clean):
    batch = services.batch_create(
        owner=alice, type="example.nap", name="lane", items=["a", "fail"], params={"sleep_s": 0}
    )
    Lane(str(batch.pk), "lane-in-test").run()
    batch.refresh_from_db()
    assert batch.status == "partial_success"
    operation = batch.operations.get(label="a")
    assert operation.result["thread"] != "batchsite-async" and operation.progress_note == "still napping"
    assert batch.operations.get(label="fail").error_type == "Grumpy"
