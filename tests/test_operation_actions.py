"""One operation: every run leaves an attempt record (automatic retries, a person's
retry, a reaped worker, a cancel), and retrying or cancelling one operation keeps the
invariants (counters equal to the rows, one terminal status per run of the batch, late outcomes
fenced out). The engine's transitions are driven here in-process; tests/test_operation_page.py
runs them on real workers and through the fronts."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import services
from jobs.errors import IllegalTransition, OperationNotFound
from jobs.models import Batch, Operation, OperationAttempt, ResultRow
from tests.invariants import assert_counters_match_rows, finished_events


def make_batch(owner, items=("a", "b"), **options) -> Batch:
    options.setdefault("type", "demo.sleep")
    options.setdefault("name", "one operation")
    return services.batch_create(owner=owner, items=list(items), **options)


def claim(batch: Batch, worker: str, limit: int = 1) -> list[services.Claim]:
    claims = services.operations_claim(batch_id=str(batch.pk), worker=worker, limit=limit)
    assert isinstance(claims, list), claims
    return claims


def record(*outcomes: services.Outcome) -> list[bool]:
    return services.operations_record(batch_id=outcomes[0].claim.batch_id, outcomes=list(outcomes)).accepted


def failed(claim: services.Claim, retryable: bool = True) -> services.Outcome:
    return services.Outcome(
        claim,
        "failed",
        15,
        error=f"boom on attempt {claim.attempt}",
        error_type="Boom",
        retryable=retryable,
        run_ms=15,
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nBoom: boom',
    )


def completed(claim: services.Claim) -> services.Outcome:
    return services.Outcome(claim, "completed", 7, result={"ok": True}, rows=[{"n": 1}], run_ms=7)


def attempts_of(operation_id: int) -> list[tuple]:
    return list(
        OperationAttempt.objects.filter(operation_id=operation_id)
        .order_by("number")
        .values_list("number", "worker", "outcome", "error_type")
    )


def test_every_run_leaves_an_attempt_record_through_retries_a_reaped_worker_and_a_persons_retry(alice):
    batch = make_batch(alice, items=["a"], max_retries=1, retry_backoff_s=0)
    [first] = claim(batch, "w1")
    assert record(failed(first)) == [True]  # an automatic retry is left: pending again
    [second] = claim(batch, "w2")
    Operation.objects.filter(pk=second.operation_id).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.operation_recover_lost(operation_id=second.operation_id, stale_before=timezone.now())
    [third] = claim(batch, "w3")  # a lost run spends no automatic retry
    assert record(failed(third)) == [True]  # none left now: failed for good
    batch.refresh_from_db()
    assert (batch.status, batch.failed) == ("failed", 1)

    services.operation_retry(batch=batch, seq=1, by=alice)
    [fourth] = claim(batch, "w4")
    assert record(completed(fourth)) == [True]
    # A late report of an earlier attempt is fenced out and leaves no record.
    assert record(completed(third)) == [False]

    assert attempts_of(first.operation_id) == [
        (1, "w1", "failed", "Boom"),
        (2, "w2", "lost", "WorkerLost"),
        (3, "w3", "failed", "Boom"),
        (4, "w4", "completed", ""),
    ]
    one = OperationAttempt.objects.get(operation_id=first.operation_id, number=1)
    assert one.traceback.startswith("Traceback") and one.duration_ms == 15 and one.started_at == first.claimed_at
    assert one.finished_at >= one.started_at
    lost = OperationAttempt.objects.get(operation_id=first.operation_id, number=2)
    assert "worker lost" in lost.error and lost.traceback == ""
    batch.refresh_from_db()
    assert (batch.status, batch.completed, finished_events(batch)) == ("completed", 1, 2)
    assert_counters_match_rows(batch)


def test_the_outcomes_of_a_group_are_recorded_with_one_attempt_each(alice):
    batch = make_batch(alice, items=["a", "b", "c"], max_parallel=3)
    claims = claim(batch, "w1", limit=3)
    waiting = services.Outcome(claims[2], "rescheduled", after_s=60, state={"job_id": "j-1"}, run_ms=3)
    assert record(completed(claims[0]), failed(claims[1], retryable=False), waiting) == [True, True, True]
    outcomes = OperationAttempt.objects.filter(batch=batch).order_by("operation__seq").values_list("outcome", flat=True)
    assert list(outcomes) == ["completed", "failed", "rescheduled"]
    assert_counters_match_rows(batch)


def test_retrying_one_failed_operation_reopens_a_finished_batch(alice):
    batch = make_batch(alice, items=["a", "b"], max_parallel=2)
    ok, bad = claim(batch, "w1", limit=2)
    record(completed(ok), failed(bad, retryable=False))
    batch.refresh_from_db()
    assert batch.status == "partial_success" and batch.finished_at is not None

    operation = services.operation_retry(batch=batch, seq=2, by=alice)
    assert (operation.status, operation.error, operation.attempts, operation.auto_retries) == ("pending", "", 1, 0)
    batch.refresh_from_db()
    assert (batch.status, batch.finished_at, batch.pending, batch.failed) == ("queued", None, 1, 0)
    assert batch.events.filter(kind="retried", message="#2 b retried", actor=alice).exists()
    assert_counters_match_rows(batch)

    [again] = claim(batch, "w2")
    assert (again.seq, again.attempt) == (2, 2)
    record(completed(again))
    batch.refresh_from_db()
    assert (batch.status, batch.completed) == ("completed", 2) and batch.finished_at is not None
    assert ResultRow.objects.filter(batch=batch).count() == 2
    assert_counters_match_rows(batch)
    services.batch_delete(batch=batch)
    assert not OperationAttempt.objects.exists()  # the batch's attempts go with it


def test_retrying_a_skipped_operation_of_a_cancelled_batch_runs_it(alice):
    batch = make_batch(alice, items=["a", "b"])
    services.batch_cancel(batch=batch, by=alice, reason="enough")
    services.operation_retry(batch=batch, seq=1, by=alice)
    batch.refresh_from_db()
    assert (batch.status, batch.skipped, batch.pending, batch.cancel_reason) == ("queued", 1, 1, "")
    [again] = claim(batch, "w1")
    record(completed(again))
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.skipped) == ("partial_success", 1, 1)
    assert_counters_match_rows(batch)


def test_cancelling_a_running_operation_records_its_attempt_and_fences_out_its_outcome(alice):
    batch = make_batch(alice, items=["a", "b"], max_parallel=2)
    running, other = claim(batch, "w1", limit=2)
    operation = services.operation_cancel(batch=batch, seq=1, by=alice)
    assert (operation.status, operation.error_type) == ("skipped", "Cancelled")
    batch.refresh_from_db()
    assert (batch.status, batch.running, batch.skipped) == ("running", 1, 1)
    assert batch.events.filter(kind="operation_cancelled", message="#1 a cancelled").exists()
    assert not batch.events.filter(kind="cancelled").exists()  # the batch itself goes on
    assert_counters_match_rows(batch)

    assert record(completed(running), completed(other)) == [False, True]
    assert attempts_of(running.operation_id) == [(1, "w1", "cancelled", "Cancelled")]
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.skipped, finished_events(batch)) == ("partial_success", 1, 1, 1)
    assert_counters_match_rows(batch)


def test_cancelling_the_last_open_operation_finishes_the_batch(alice):
    batch = make_batch(alice, items=["a", "b"])
    [first] = claim(batch, "w1")
    record(completed(first))
    services.operation_cancel(batch=batch, seq=2, by=alice)
    batch.refresh_from_db()
    assert (batch.status, batch.pending, batch.skipped) == ("partial_success", 0, 1)
    assert batch.finished_at is not None and finished_events(batch) == 1
    assert_counters_match_rows(batch)


@pytest.mark.parametrize(
    "action, seq, expected",
    [
        (services.operation_retry, 1, IllegalTransition),  # completed: nothing to retry
        (services.operation_cancel, 1, IllegalTransition),  # completed: nothing to cancel
        (services.operation_retry, 2, IllegalTransition),  # pending
        (services.operation_cancel, 9, OperationNotFound),
    ],
)
def test_what_the_status_does_not_allow_is_refused_and_nothing_changes(alice, action, seq, expected):
    batch = make_batch(alice, items=["a", "b"])
    [first] = claim(batch, "w1")
    record(completed(first))
    batch.refresh_from_db()
    before = (batch.version, list(batch.operations.values_list("status", flat=True)))
    with pytest.raises(expected):
        action(batch=batch, seq=seq, by=alice)
    batch.refresh_from_db()
    assert (batch.version, list(batch.operations.values_list("status", flat=True))) == before


def test_operations_of_a_finished_batch_cannot_be_cancelled(alice):
    batch = make_batch(alice, items=["a"])
    services.batch_cancel(batch=batch, by=alice)
    with pytest.raises(IllegalTransition, match="Cannot cancel an operation of a cancelled batch"):
        services.operation_cancel(batch=batch, seq=1, by=alice)
