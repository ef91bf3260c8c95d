"""The engine with real Redis and real RQ worker processes (the counter and state invariants under load)."""

import time

import django_rq
import pytest
from django.core.management import call_command

from jobs import services
from jobs.engine import dispatch
from jobs.models import Batch, Operation
from tests.conftest import wait_for
from tests.invariants import assert_counters_match_rows, finished_events

pytestmark = pytest.mark.workers


def sleep_batch(owner, count=6, duration_ms=100, item_params=None, **options) -> Batch:
    options.setdefault("name", "engine test")
    params = {"duration_ms": duration_ms, **options.pop("params", {})}
    items = [{"label": f"op-{i}", "params": (item_params or {}).get(i, {})} for i in range(1, count + 1)]
    return services.batch_create(owner=owner, type="demo.sleep", items=items, params=params, **options)


def running_in_workers() -> int:
    return sum(info["running"] for info in dispatch.live_workers().values())


def wait_until_finished(batch: Batch, timeout: float = 60) -> Batch:
    def finished():
        batch.refresh_from_db()
        return batch.is_terminal

    wait_for(finished, timeout, message=f"batch {batch.short_id} to finish")
    return batch


def test_a_batch_runs_to_completion_on_real_workers(alice, workers):
    workers.start(2)
    batch = wait_until_finished(sleep_batch(alice, count=8, duration_ms=50, max_parallel=4))
    assert batch.status == "completed"
    assert (batch.completed, batch.percent_complete) == (8, 100)
    assert set(batch.operations.values_list("status", flat=True)) == {"completed"}
    assert all(op.worker and op.duration_ms >= 50 for op in batch.operations.all())
    assert finished_events(batch) == 1
    assert_counters_match_rows(batch)


def test_workers_never_run_more_operations_than_max_parallel(alice, workers):
    """Four workers and six lanes compete; the claim must hold the line at three."""
    workers.start(4)
    batch = sleep_batch(alice, count=24, duration_ms=150, max_parallel=3)
    dispatch.enqueue_lanes(str(batch.pk), count=3, priority="default")
    peak_rows = peak_counter = 0
    while True:
        batch.refresh_from_db()
        rows = Operation.objects.filter(batch=batch, status="running").count()
        peak_rows, peak_counter = max(peak_rows, rows), max(peak_counter, batch.running)
        assert rows <= 3 and batch.running <= 3
        if batch.is_terminal:
            break
        assert batch.percent_complete < 100
        time.sleep(0.01)
    assert peak_rows == 3 or peak_counter == 3, "the test never saw the limit reached"
    assert batch.status == "completed"
    assert_counters_match_rows(batch)


def test_max_parallel_one_runs_operations_one_after_another(alice, workers):
    workers.start(2)
    batch = wait_until_finished(sleep_batch(alice, count=5, duration_ms=80, max_parallel=1))
    spans = sorted((op.started_at, op.finished_at) for op in batch.operations.all())
    assert all(previous_end <= next_start for (_, previous_end), (next_start, _) in zip(spans, spans[1:], strict=False))
    assert [op.label for op in batch.operations.order_by("started_at")] == [f"op-{i}" for i in range(1, 6)]


def test_a_killed_worker_does_not_leave_the_batch_stuck(alice, workers):
    """SIGKILL mid-operation: the reaper returns the operation to pending and restarts dispatch."""
    first = workers.start(1)[0]
    batch = sleep_batch(alice, count=4, duration_ms=1500, max_parallel=1, max_retries=1, retry_backoff_s=0)
    victim = wait_for(lambda: Operation.objects.filter(batch=batch, status="running").first(), 30)
    workers.kill(first)
    workers.start(1)
    batch = wait_until_finished(batch, timeout=90)
    assert batch.status == "completed"
    victim.refresh_from_db()
    assert victim.attempts == 2 and victim.status == "completed"
    assert batch.events.filter(kind="reaped").exists()
    assert finished_events(batch) == 1
    assert_counters_match_rows(batch)


def test_batch_reap_resumes_a_batch_after_redis_was_flushed(alice, workers, redis_clean):
    first = workers.start(1)[0]
    batch = sleep_batch(alice, count=6, duration_ms=400, max_parallel=1, max_retries=1, retry_backoff_s=0)
    wait_for(lambda: Operation.objects.filter(batch=batch, status="completed").count() >= 1, 30)
    # Redis restarted with nothing on disk and the worker with it: lanes, queues, reaper chain gone.
    workers.kill(first)
    redis_clean.flushdb()
    time.sleep(3.5)  # the running operation's heartbeat goes stale (BATCHSITE_STALE_AFTER_S=3)
    call_command("batch", "reap")
    assert django_rq.get_queue("default").count >= 1, "reap enqueued no lane"
    workers.start(1)
    batch = wait_until_finished(batch, timeout=60)
    assert batch.status == "completed"
    assert_counters_match_rows(batch)


def test_cancel_stops_running_operations_not_only_pending_ones(alice, workers):
    workers.start(2)
    batch = sleep_batch(alice, count=6, duration_ms=20_000, max_parallel=2)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).running == 2, 30)
    cancelled_at = time.monotonic()
    services.batch_cancel(batch=batch, by=alice)
    # The operations would sleep for 20 s; stopped, their slots are free within a second or so
    # (the workers' registry shows what each runs, refreshed every heartbeat).
    wait_for(lambda: running_in_workers() == 0, 8, message="the workers to stop the operations")
    assert time.monotonic() - cancelled_at < 3
    batch.refresh_from_db()
    assert (batch.status, batch.skipped, batch.completed) == ("cancelled", 6, 0)
    assert_counters_match_rows(batch)


def test_pause_lets_running_operations_finish_and_resume_continues(alice, workers):
    workers.start(2)
    batch = sleep_batch(alice, count=10, duration_ms=200, max_parallel=2)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).completed >= 2, 30)
    services.batch_pause(batch=batch)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).running == 0, 10)
    batch.refresh_from_db()
    done = batch.completed
    time.sleep(1)
    batch.refresh_from_db()
    assert (batch.status, batch.completed) == ("paused", done)
    assert batch.pending > 0
    services.batch_resume(batch=batch)
    batch = wait_until_finished(batch)
    assert batch.status == "completed"
    assert_counters_match_rows(batch)


def test_stop_on_error_skips_what_was_not_started(alice, workers):
    workers.start(1)
    batch = sleep_batch(
        alice, count=5, duration_ms=20, item_params={2: {"failure_rate": 1}}, max_parallel=1, stop_on_error=True
    )
    batch = wait_until_finished(batch)
    assert batch.status == "partial_success"
    assert (batch.completed, batch.failed, batch.skipped) == (1, 1, 3)
    assert batch.events.filter(kind="stopped").count() == 1
    assert_counters_match_rows(batch)


def test_automatic_retries_back_off_then_succeed(alice, workers):
    workers.start(1)
    started = time.monotonic()
    batch = sleep_batch(alice, count=1, duration_ms=10, params={"fail_attempts": 2}, max_retries=2, retry_backoff_s=0.5)
    batch = wait_until_finished(batch)
    elapsed = time.monotonic() - started
    operation = batch.operations.get()
    assert (batch.status, operation.attempts, operation.auto_retries) == ("completed", 3, 2)
    assert elapsed >= 1.5  # 0.5 s then 1.0 s of backoff
    assert_counters_match_rows(batch)


def test_retry_failed_runs_the_failed_operations_again(alice, workers):
    workers.start(1)
    batch = sleep_batch(alice, count=3, duration_ms=10, item_params={1: {"fail_attempts": 1}, 3: {"fail_attempts": 1}})
    batch = wait_until_finished(batch)
    assert (batch.status, batch.failed) == ("partial_success", 2)
    services.batch_retry_failed(batch=batch, by=alice)
    batch = wait_until_finished(batch)
    assert (batch.status, batch.completed) == ("completed", 3)
    assert finished_events(batch) == 2
    assert_counters_match_rows(batch)


def test_an_operation_past_its_timeout_fails_as_timeout(alice, workers):
    workers.start(1)
    started = time.monotonic()
    batch = wait_until_finished(sleep_batch(alice, count=1, duration_ms=30_000, timeout_s=1))
    operation = batch.operations.get()
    assert (batch.status, operation.error_type) == ("failed", "Timeout")
    assert time.monotonic() - started < 15
    assert_counters_match_rows(batch)


def test_a_long_operation_that_heartbeats_is_not_reaped(alice, workers):
    """Longer than BATCHSITE_STALE_AFTER_S (3 s), but the lane's heartbeats keep it alive."""
    workers.start(1)
    batch = wait_until_finished(sleep_batch(alice, count=1, duration_ms=4500))
    operation = batch.operations.get()
    assert (batch.status, operation.attempts) == ("completed", 1)
    assert not batch.events.filter(kind="reaped").exists()


def test_one_worker_runs_many_operations_at_once(alice, workers):
    """max_parallel 8 on one worker process: 8 operations overlap (BATCHSITE_WORKER_CONCURRENCY 8)."""
    workers.start(1)
    batch = wait_until_finished(sleep_batch(alice, count=16, duration_ms=500, max_parallel=8))
    spans = [(op.started_at, op.finished_at) for op in batch.operations.all()]
    overlap = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert overlap == 8
    assert len({op.worker for op in batch.operations.all()}) == 1
    assert_counters_match_rows(batch)


def test_a_batch_started_later_is_not_starved_by_a_wide_one(alice, workers):
    """A batch with max_parallel 100 fills both workers; one started after it on the same queue
    still gets slots as they free up, long before the wide one ends."""
    workers.start(2)
    wide = sleep_batch(alice, count=200, duration_ms=300, max_parallel=100, name="wide")
    wait_for(lambda: Batch.objects.get(pk=wide.pk).running >= 16, 30, message="the wide batch to fill the workers")
    narrow = wait_until_finished(sleep_batch(alice, count=4, duration_ms=100, max_parallel=4, name="narrow"), 60)
    wide.refresh_from_db()
    assert narrow.status == "completed"
    assert not wide.is_terminal, "the narrow batch waited for the wide one to end"
    wait_until_finished(wide, 120)
    assert_counters_match_rows(wide)


def test_high_priority_batches_go_first_when_slots_free(alice, workers):
    workers.start(1)
    low = sleep_batch(alice, count=40, duration_ms=300, max_parallel=40, name="low", priority="low")
    wait_for(lambda: Batch.objects.get(pk=low.pk).running >= 8, 30, message="the low batch to fill the worker")
    high = sleep_batch(alice, count=8, duration_ms=100, max_parallel=8, name="high", priority="high")
    high = wait_until_finished(high, 60)
    low.refresh_from_db()
    # Every slot that freed went to the high batch until it was done: it ran 8 operations while
    # the low one had 32 still waiting.
    assert low.pending >= 16, low.pending
    wait_until_finished(low, 60)


def test_a_worker_with_too_many_overrunning_threads_recycles_itself(alice, workers):
    """Operations that ignore their timeout (a blocking sleep) are failed as Timeout at once and
    their threads abandoned; past BATCHSITE_MAX_ABANDONED such threads the worker stops itself
    (warm shutdown; a supervisor starts it again)."""
    workers.env["BATCHSITE_MAX_ABANDONED"] = "1"
    (worker,) = workers.start(1)
    batch = wait_until_finished(sleep_batch(alice, count=2, duration_ms=60_000, timeout_s=1, max_parallel=2), 30)
    assert (batch.status, set(batch.operations.values_list("error_type", flat=True))) == ("failed", {"Timeout"})
    wait_for(lambda: worker.poll() is not None, 30, message="the worker to recycle itself")
