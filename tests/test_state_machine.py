"""Property-based test of the state machine: random interleavings of claim, complete, fail,
reschedule (waiting on outside work), duplicate reports, lost workers, cancel, pause, resume and
retry keep the counter and state invariants."""

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import services
from jobs.errors import IllegalTransition
from jobs.models import TERMINAL_STATUSES, BatchEvent, Operation
from tests.invariants import assert_counters_match_rows

claim_index = st.integers(min_value=0, max_value=50)
actions = st.one_of(
    st.just(("claim",)),
    st.tuples(st.just("complete"), claim_index),
    st.tuples(st.just("fail"), claim_index, st.booleans()),
    st.tuples(st.just("reschedule"), claim_index, st.sampled_from([0, 30])),
    st.tuples(st.just("lost"), claim_index),
    st.just(("cancel",)),
    st.just(("pause",)),
    st.just(("resume",)),
    st.just(("retry",)),
    st.just(("make_due",)),
)


@pytest.mark.django_db
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(actions, min_size=1, max_size=40),
    size=st.integers(min_value=1, max_value=6),
    max_parallel=st.integers(min_value=1, max_value=3),
    max_retries=st.integers(min_value=0, max_value=2),
    stop_on_error=st.booleans(),
)
def test_random_interleavings_keep_the_invariants(alice, steps, size, max_parallel, max_retries, stop_on_error):
    batch = services.batch_create(
        owner=alice,
        type="noop",
        name="property",
        items=[f"item-{i}" for i in range(size)],
        max_parallel=max_parallel,
        max_retries=max_retries,
        retry_backoff_s=0,
        stop_on_error=stop_on_error,
    )
    claims: list[services.Claim] = []
    accepted: set[tuple[int, int]] = set()
    successful_claims = 0
    expected_finishes = 0
    was_terminal = False

    for step in steps:
        action = step[0]
        try:
            if action == "claim":
                result = services.operation_claim_next(batch_id=str(batch.pk), worker="property")
                if isinstance(result, services.Claim):
                    claims.append(result)
                    successful_claims += 1
            elif action in ("complete", "fail", "reschedule") and claims:
                claim = claims[step[1] % len(claims)]
                if action == "complete":
                    took = services.operation_complete(claim=claim, duration_ms=1)
                elif action == "reschedule":
                    took = services.operation_reschedule(claim=claim, after_s=step[2], state={"attempt": claim.attempt})
                else:
                    took = services.operation_fail(
                        claim=claim, error="boom", error_type="Boom", duration_ms=1, retryable=step[2]
                    )
                key = (claim.operation_id, claim.attempt)
                # Invariant 3: each attempt's outcome is accepted at most once.
                assert not (took and key in accepted), f"attempt {key} counted twice"
                if took:
                    accepted.add(key)
            elif action == "lost" and claims:
                claim = claims[step[1] % len(claims)]
                # Only the current attempt may be recovered; make it stale as a dead worker would.
                Operation.objects.filter(pk=claim.operation_id, attempts=claim.attempt).update(
                    heartbeat_at=timezone.now() - timedelta(hours=1)
                )
                if services.operation_recover_lost(
                    operation_id=claim.operation_id, stale_before=timezone.now() - timedelta(minutes=1)
                ):
                    accepted.add((claim.operation_id, claim.attempt))
            elif action == "cancel":
                services.batch_cancel(batch=batch)
            elif action == "pause":
                services.batch_pause(batch=batch)
            elif action == "resume":
                services.batch_resume(batch=batch)
            elif action == "retry":
                services.batch_retry_failed(batch=batch)
            elif action == "make_due":
                batch.operations.filter(status="pending").update(not_before=None)
        except IllegalTransition:
            pass

        # Invariant 1: counters equal the rows, at every commit.
        assert_counters_match_rows(batch)
        # Invariant 2: never more than max_parallel running.
        assert batch.running <= batch.max_parallel
        # Every claim was one attempt of one operation.
        assert sum(batch.operations.values_list("attempts", flat=True)) == successful_claims
        # Invariant 4: terminal exactly when nothing is pending or running (or cancelled), with
        # finished_at; one "finished" event per run to the end.
        terminal = batch.status in TERMINAL_STATUSES
        if terminal and not was_terminal and batch.status != "cancelled":
            expected_finishes += 1
        was_terminal = terminal
        if terminal:
            assert batch.finished_at is not None
            assert batch.pending == batch.running == 0
            assert batch.percent_complete == 100
        else:
            assert batch.finished_at is None
            assert batch.pending + batch.running > 0
            assert batch.percent_complete < 100
        assert BatchEvent.objects.filter(batch=batch, kind="finished").count() == expected_finishes
        assert BatchEvent.objects.filter(batch=batch, kind="cancelled").count() == (batch.status == "cancelled")
