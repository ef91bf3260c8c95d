"""The service layer without workers: transitions, counters, validation, final statuses."""

import pytest
from django.test import override_settings

from jobs import services
from jobs.engine import dispatch
from jobs.errors import IllegalTransition, InvalidInput, RateLimited, TooManyOperations
from jobs.models import Batch, BatchEvent, Operation, ResultRow
from tests.invariants import assert_counters_match_rows, finished_events


def make_batch(owner, items=("a", "b", "c"), **options) -> Batch:
    options.setdefault("type", "demo.sleep")
    options.setdefault("name", "test batch")
    return services.batch_create(owner=owner, items=list(items), **options)


def claim(batch: Batch) -> services.Claim:
    result = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    assert isinstance(result, services.Claim), result
    return result


def test_it_creates_a_queued_batch_with_all_operations(alice):
    batch = make_batch(alice, items=["a", {"label": "b", "params": {"duration_ms": 5}}], params={"duration_ms": 50})
    batch.refresh_from_db()
    assert batch.status == "queued"
    assert (batch.total, batch.pending) == (2, 2)
    assert batch.params == {"duration_ms": 50, "failure_rate": 0.0, "fail_attempts": 0}
    assert list(batch.operations.values_list("seq", "label", "params")) == [(1, "a", {}), (2, "b", {"duration_ms": 5})]
    assert list(batch.events.values_list("kind", flat=True)) == ["created"]
    assert_counters_match_rows(batch)


@pytest.mark.parametrize(
    "changes, path",
    [
        ({"type": "no.such.type"}, "type"),
        ({"items": []}, "items"),
        ({"items": ["ok", ""]}, "items[1]"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"max_parallel": 101}, "max_parallel"),
        ({"max_retries": 11}, "max_retries"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"priority": "urgent"}, "priority"),
        ({"name": ""}, "name"),
        ({"params": {"failure_rate": 2}}, "params.failure_rate"),
        ({"params": {"bogus": 1}}, "params"),
        ({"items": ["a", {"label": "b", "params": {"duration_ms": "slow"}}]}, "items[1].params.duration_ms"),
    ],
)
def test_it_refuses_bad_input_and_writes_nothing(alice, changes, path):
    with pytest.raises(InvalidInput) as caught:
        make_batch(alice, **changes)
    assert path in caught.value.errors
    assert Batch.objects.count() == Operation.objects.count() == BatchEvent.objects.count() == 0


@override_settings(BATCH_MAX_OPERATIONS=5)
def test_it_refuses_more_operations_than_the_limit(alice):
    with pytest.raises(TooManyOperations):
        make_batch(alice, items=[str(i) for i in range(6)])
    assert Batch.objects.count() == 0


def test_claims_never_exceed_max_parallel(alice):
    batch = make_batch(alice, items=[str(i) for i in range(5)], max_parallel=2)
    claim(batch)
    claim(batch)
    refused = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    assert refused == services.NoClaim("full")
    batch.refresh_from_db()
    assert (batch.status, batch.running, batch.pending) == ("running", 2, 3)
    assert_counters_match_rows(batch)


def test_claims_take_operations_in_sequence_and_set_current_operation(alice):
    batch = make_batch(alice, items=["first", "second"])
    assert claim(batch).label == "first"
    assert claim(batch).label == "second"
    batch.refresh_from_db()
    assert batch.current_operation == "second"
    assert batch.started_at is not None


def test_an_outcome_is_counted_once_per_attempt(alice):
    batch = make_batch(alice, items=["a", "b"])
    first = claim(batch)
    assert services.operation_complete(claim=first, duration_ms=10, result={"ok": 1}, rows=[{"x": 1}])
    assert not services.operation_complete(claim=first, duration_ms=10, result={"ok": 2}, rows=[{"x": 2}])
    assert not services.operation_fail(claim=first, error="late", error_type="Late", duration_ms=1)
    batch.refresh_from_db()
    assert (batch.completed, batch.failed) == (1, 0)
    assert ResultRow.objects.filter(batch=batch).count() == 1
    assert_counters_match_rows(batch)


@pytest.mark.parametrize(
    "outcomes, status",
    [
        (["ok", "ok", "ok"], "completed"),
        (["fail", "fail", "fail"], "failed"),
        (["ok", "fail", "ok"], "partial_success"),
    ],
)
def test_the_final_status_follows_the_outcomes(alice, outcomes, status):
    batch = make_batch(alice, max_parallel=3)
    claims = [claim(batch) for _ in outcomes]
    for outcome, current in zip(outcomes, claims, strict=True):
        batch.refresh_from_db()
        assert batch.percent_complete < 100 and batch.finished_at is None
        if outcome == "ok":
            services.operation_complete(claim=current, duration_ms=5)
        else:
            services.operation_fail(claim=current, error="boom", error_type="Boom", duration_ms=5)
    batch.refresh_from_db()
    assert batch.status == status
    assert batch.percent_complete == 100
    assert batch.finished_at is not None
    assert finished_events(batch) == 1
    assert_counters_match_rows(batch)


def test_percent_is_rounded_down_and_never_100_before_the_end(alice):
    batch = make_batch(alice, items=[str(i) for i in range(200)], max_parallel=100)
    for _ in range(199):
        services.operation_complete(claim=claim(batch), duration_ms=1)
    batch.refresh_from_db()
    assert batch.percent_complete == 99
    assert batch.status == "running"


def test_a_failure_with_retries_left_goes_back_to_pending_with_backoff(alice):
    batch = make_batch(alice, items=["a"], max_retries=2, retry_backoff_s=10)
    first = claim(batch)
    services.operation_fail(claim=first, error="boom", error_type="Boom", duration_ms=5)
    operation = Operation.objects.get(batch=batch)
    assert (operation.status, operation.auto_retries, operation.error) == ("pending", 1, "boom")
    wait = (operation.not_before - operation.started_at).total_seconds()
    assert 9 < wait < 12
    refused = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    assert refused.reason == "not_due" and refused.next_due == operation.not_before
    Operation.objects.filter(pk=operation.pk).update(not_before=None)
    second = claim(batch)
    services.operation_fail(claim=second, error="boom", error_type="Boom", duration_ms=5)
    operation.refresh_from_db()
    assert operation.auto_retries == 2
    # The second automatic retry waits twice as long: backoff doubles per attempt.
    assert 19 < (operation.not_before - operation.started_at).total_seconds() < 22
    Operation.objects.filter(pk=operation.pk).update(not_before=None)
    services.operation_fail(claim=claim(batch), error="boom", error_type="Boom", duration_ms=5)
    operation.refresh_from_db()
    assert (operation.status, operation.attempts) == ("failed", 3)
    batch.refresh_from_db()
    assert batch.status == "failed"
    assert_counters_match_rows(batch)


def test_stop_on_error_skips_the_rest(alice):
    batch = make_batch(alice, items=["a", "b", "c", "d"], max_parallel=2, stop_on_error=True)
    first, second = claim(batch), claim(batch)
    services.operation_fail(claim=first, error="boom", error_type="Boom", duration_ms=5)
    batch.refresh_from_db()
    assert (batch.skipped, batch.pending, batch.running, batch.status) == (2, 0, 1, "running")
    services.operation_complete(claim=second, duration_ms=5)
    batch.refresh_from_db()
    assert batch.status == "partial_success"
    assert list(batch.events.values_list("kind", flat=True)) == [
        "created",
        "started",
        "operation_failed_final",
        "stopped",
        "finished",
    ]
    assert_counters_match_rows(batch)


def test_cancel_skips_pending_and_stops_running_operations(alice):
    batch = make_batch(alice, items=["a", "b", "c"])
    running = claim(batch)
    services.batch_cancel(batch=batch, by=alice, reason="wrong input")
    batch.refresh_from_db()
    assert (batch.status, batch.skipped, batch.running, batch.pending) == ("cancelled", 3, 0, 0)
    assert batch.cancelled_by == alice and batch.cancel_reason == "wrong input"
    assert batch.finished_at is not None
    # The stopped attempt's late outcome is discarded.
    assert not services.operation_complete(claim=running, duration_ms=5)
    batch.refresh_from_db()
    assert batch.completed == 0
    assert_counters_match_rows(batch)
    with pytest.raises(IllegalTransition):
        services.batch_cancel(batch=batch)


def test_pause_stops_claims_and_resume_allows_them(alice):
    batch = make_batch(alice, items=["a", "b"])
    running = claim(batch)
    services.batch_pause(batch=batch, by=alice)
    assert services.operation_claim_next(batch_id=str(batch.pk), worker="t").reason == "inactive"
    services.operation_complete(claim=running, duration_ms=5)
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.pending) == ("paused", 1, 1)
    with pytest.raises(IllegalTransition):
        services.batch_pause(batch=batch)
    services.batch_resume(batch=batch, by=alice)
    services.operation_complete(claim=claim(batch), duration_ms=5)
    batch.refresh_from_db()
    assert batch.status == "completed"
    assert list(batch.events.values_list("kind", flat=True)) == [
        "created",
        "started",
        "paused",
        "resumed",
        "finished",
    ]


def test_retry_failed_runs_a_finished_batch_again(alice):
    batch = make_batch(alice, items=["a", "b"], max_parallel=2)
    ok, bad = claim(batch), claim(batch)
    services.operation_complete(claim=ok, duration_ms=5)
    services.operation_fail(claim=bad, error="boom", error_type="Boom", duration_ms=5)
    batch.refresh_from_db()
    assert batch.status == "partial_success"
    assert services.batch_retry_failed(batch=batch, by=alice) == 1
    batch.refresh_from_db()
    assert (batch.status, batch.failed, batch.pending, batch.finished_at) == ("queued", 0, 1, None)
    services.operation_complete(claim=claim(batch), duration_ms=5)
    batch.refresh_from_db()
    assert batch.status == "completed"
    assert finished_events(batch) == 2
    assert_counters_match_rows(batch)


def test_retry_is_refused_without_failed_operations(alice):
    batch = make_batch(alice, items=["a"])
    services.operation_complete(claim=claim(batch), duration_ms=5)
    with pytest.raises(IllegalTransition):
        services.batch_retry_failed(batch=batch)


def test_active_batches_cannot_be_deleted_but_finished_ones_can(alice):
    batch = make_batch(alice, items=["a"])
    with pytest.raises(IllegalTransition):
        services.batch_delete(batch=batch)
    services.operation_complete(claim=claim(batch), duration_ms=5, rows=[{"k": 1}])
    services.batch_delete(batch=batch)
    assert not Batch.objects.exists() and not Operation.objects.exists() and not ResultRow.objects.exists()


def test_prune_deletes_only_old_finished_batches(alice):
    from datetime import timedelta

    from django.utils import timezone

    old, recent, active = make_batch(alice), make_batch(alice), make_batch(alice)
    for batch in (old, recent):
        services.batch_cancel(batch=batch)
    Batch.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=10))
    assert services.batch_prune(days=7) == 1
    assert set(Batch.objects.values_list("pk", flat=True)) == {recent.pk, active.pk}


def test_a_lost_operation_runs_again_without_spending_retries_until_it_was_lost_max_lost_times(alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.BATCHSITE_MAX_LOST = 3
    batch = make_batch(alice, items=["a"], max_retries=0)
    for expected in ("pending", "pending", "failed"):
        current = claim(batch)
        Operation.objects.filter(pk=current.operation_id).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        assert services.operation_recover_lost(
            operation_id=current.operation_id, stale_before=timezone.now() - timedelta(minutes=1)
        )
        operation = Operation.objects.get(pk=current.operation_id)
        assert (operation.status, operation.auto_retries, operation.error_type) == (expected, 0, "WorkerLost")
        assert operation.error.startswith("worker lost")
    assert operation.lost == 3 and operation.attempts == 3
    batch.refresh_from_db()
    assert batch.status == "failed"
    assert batch.events.filter(kind="reaped").count() == 3
    assert_counters_match_rows(batch)


def test_a_fresh_operation_is_not_recovered(alice):
    from datetime import timedelta

    from django.utils import timezone

    batch = make_batch(alice, items=["a"])
    current = claim(batch)
    assert not services.operation_recover_lost(
        operation_id=current.operation_id, stale_before=timezone.now() - timedelta(minutes=1)
    )
    assert Operation.objects.get(pk=current.operation_id).status == "running"


# --- operations that wait on outside work (Reschedule) ------------------------------------------


def make_due(batch: Batch) -> None:
    batch.operations.filter(status="pending").update(not_before=None)


def test_a_rescheduled_operation_waits_as_pending_with_its_state(alice):
    batch = make_batch(alice, items=["a", "b"])
    first = claim(batch)
    recorded = services.operation_reschedule(claim=first, after_s=30, state={"job_id": "wb-1"})
    assert recorded.accepted
    operation = Operation.objects.get(pk=first.operation_id)
    assert (operation.status, operation.state, operation.attempts, operation.auto_retries) == (
        "pending",
        {"job_id": "wb-1"},
        1,
        0,
    )
    assert 29 < (operation.not_before - operation.started_at).total_seconds() < 32
    batch.refresh_from_db()
    # Not a finished attempt: counters say pending, and no duration enters the ETA's mean.
    assert (batch.pending, batch.running, batch.duration_count, batch.status) == (2, 0, 0, "running")
    assert_counters_match_rows(batch)
    # The other operation is due; then nothing is until the wait ends.
    other = claim(batch)
    assert other.label == "b" and other.state is None
    refused = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    assert refused == services.NoClaim("not_due", operation.not_before)


def test_the_next_run_gets_the_state_a_new_attempt_number_and_the_first_start(alice):
    batch = make_batch(alice, items=["a"])
    first = claim(batch)
    services.operation_reschedule(claim=first, after_s=0, state={"job_id": "wb-1", "polls": 0})
    second = claim(batch)
    assert (second.attempt, second.state, second.started_at) == (2, {"job_id": "wb-1", "polls": 0}, first.started_at)
    services.operation_reschedule(claim=second, after_s=0, state={"job_id": "wb-1", "polls": 1})
    third = claim(batch)
    assert (third.attempt, third.state["polls"], third.started_at) == (3, 1, first.started_at)
    assert services.operation_complete(claim=third, duration_ms=5000, result={"status": "done"})
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.duration_count, batch.duration_total_ms) == (
        "completed",
        1,
        1,
        5000,
    )
    assert_counters_match_rows(batch)


def test_a_reschedule_from_an_attempt_that_is_not_current_changes_nothing(alice):
    batch = make_batch(alice, items=["a"])
    first = claim(batch)
    assert services.operation_reschedule(claim=first, after_s=0, state={"n": 1})
    assert not services.operation_reschedule(claim=first, after_s=0, state={"n": 2})
    second = claim(batch)
    # The first attempt's late reports cannot touch the second one.
    assert not services.operation_reschedule(claim=first, after_s=0, state={"n": 3})
    assert not services.operation_complete(claim=first, duration_ms=1)
    operation = Operation.objects.get(pk=second.operation_id)
    assert (operation.status, operation.attempts, operation.state) == ("running", 2, {"n": 1})
    batch.refresh_from_db()
    assert (batch.running, batch.pending) == (1, 0)
    assert_counters_match_rows(batch)


def test_waiting_uses_no_automatic_retry_and_retries_keep_the_state_but_a_person_s_retry_does_not(alice):
    batch = make_batch(alice, items=["a"], max_retries=1, retry_backoff_s=0)
    for polls in range(3):
        services.operation_reschedule(claim=claim(batch), after_s=0, state={"job_id": "wb-1", "polls": polls})
    # A failed poll: the one automatic retry is still there, and it goes on with the same job.
    services.operation_fail(claim=claim(batch), error="HTTP 503", error_type="HTTPStatus", duration_ms=5)
    operation = Operation.objects.get(batch=batch)
    assert (operation.status, operation.auto_retries, operation.state["polls"]) == ("pending", 1, 2)
    make_due(batch)
    retried = claim(batch)
    assert retried.state == {"job_id": "wb-1", "polls": 2}
    services.operation_fail(claim=retried, error="Gave up", error_type="Deadline", duration_ms=5)
    batch.refresh_from_db()
    assert batch.status == "failed"
    services.batch_retry_failed(batch=batch, by=alice)
    assert claim(batch).state is None
    assert_counters_match_rows(batch)


def test_cancelling_asks_a_worker_to_cancel_the_outside_work_of_waiting_and_running_operations(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    enqueued = []
    monkeypatch.setattr(dispatch, "enqueue_outside_cancel", lambda batch_id, ids: enqueued.append((batch_id, ids)))
    params = {"submit_url": "https://wb/submit", "status_url": "https://wb/jobs/{job_id}"}
    batch = make_batch(
        alice, items=["waiting", "running", "fresh", "new"], type="workbench.job", params=params, max_parallel=3
    )
    waiting, running, _fresh = claim(batch), claim(batch), claim(batch)
    services.operation_reschedule(claim=waiting, after_s=60, state={"job_id": "wb-1"})
    services.operation_reschedule(claim=running, after_s=0, state={"job_id": "wb-2"})
    running = claim(batch)
    assert running.label == "running"
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_cancel(batch=batch, by=alice)
    # "fresh" is running its submit (no job yet) and "new" never started: nothing to cancel outside.
    assert [(batch_id, sorted(ids)) for batch_id, ids in enqueued] == [
        (str(batch.pk), sorted([waiting.operation_id, running.operation_id]))
    ]
    batch.refresh_from_db()
    assert (batch.status, batch.skipped) == ("cancelled", 4)
    assert_counters_match_rows(batch)


def test_stopping_on_error_cancels_the_outside_work_of_waiting_operations(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    enqueued = []
    monkeypatch.setattr(dispatch, "enqueue_outside_cancel", lambda batch_id, ids: enqueued.append(ids))
    params = {"submit_url": "https://wb/submit", "status_url": "https://wb/jobs/{job_id}"}
    batch = make_batch(alice, items=["a", "b"], type="workbench.job", params=params, max_parallel=2, stop_on_error=True)
    first, second = claim(batch), claim(batch)
    services.operation_reschedule(claim=second, after_s=60, state={"job_id": "wb-b"})
    with django_capture_on_commit_callbacks(execute=True):
        services.operation_fail(claim=first, error="HTTP 404", error_type="HTTPStatus", duration_ms=5, retryable=False)
    assert enqueued == [[second.operation_id]]
    batch.refresh_from_db()
    assert (batch.status, batch.failed, batch.skipped) == ("failed", 1, 1)
    assert_counters_match_rows(batch)


def test_types_without_a_cancel_enqueue_nothing_on_cancel(alice, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(dispatch, "enqueue_outside_cancel", lambda *args: pytest.fail("nothing to cancel"))
    batch = make_batch(alice, items=["a"])
    services.operation_reschedule(claim=claim(batch), after_s=60, state={"x": 1})
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_cancel(batch=batch)


@override_settings(BATCH_CREATE_RATE_LIMIT=2, BATCH_CREATE_RATE_WINDOW_S=3600)
def test_creation_over_the_rate_limit_raises_rate_limited_and_writes_nothing_but_the_system_is_not_limited(
    alice, redis_clean
):
    for _ in range(2):
        services.batch_create(owner=alice, type="noop", items=["a"], name="n")
    with pytest.raises(RateLimited) as caught:
        services.batch_create(owner=alice, type="noop", items=["a"], name="refused")
    assert 0 < caught.value.retry_after_s <= 3600
    assert not Batch.objects.filter(name="refused").exists()
    services.batch_create(owner=alice, type="noop", items=["a"], name="scheduled", rate_limit=False)
    assert Batch.objects.filter(owner=alice).count() == 3


def test_the_same_idempotency_key_gives_the_first_batch_and_another_body_is_refused(alice):
    first = services.batch_create(owner=alice, type="noop", items=["a"], name="n", idempotency=("k1", "hash-1"))
    again = services.batch_create(owner=alice, type="noop", items=["a"], name="n", idempotency=("k1", "hash-1"))
    assert again.pk == first.pk
    with pytest.raises(InvalidInput):
        services.batch_create(owner=alice, type="noop", items=["b"], name="m", idempotency=("k1", "hash-2"))
    assert Batch.objects.count() == 1
