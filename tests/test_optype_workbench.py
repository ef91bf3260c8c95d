"""`workbench.job` (seed 004): submit a job to an external API, then follow it by polling, with
no worker waiting between polls (engine Reschedule), until it ends, fails, runs out of time or
its batch is cancelled."""

import json
import re
import threading
import time
from collections import Counter

import pytest
from werkzeug import Request, Response

from jobs import services
from jobs.errors import InvalidInput
from jobs.models import Operation
from jobs.optypes.base import OperationFailure, PermanentFailure, Reschedule
from tests.conftest import run_operation, run_operation_with_rows, wait_for
from tests.databases import run_inline
from tests.invariants import assert_counters_match_rows
from tests.test_api import ApiClient
from tests.test_engine import wait_until_finished


class FakeWorkbench:
    """A workbench API on pytest-httpserver: POST /submit answers {"job_id": "wb-<label>"}; a job
    reports "running" to its first `polls_needed` status requests, then its end state. Labels
    starting with "bad" fail with a message; "slow" ones never finish. Records every call."""

    def __init__(self, server, polls_needed: int = 3) -> None:
        self.server = server
        self.polls_needed = polls_needed
        self.polls: Counter[str] = Counter()
        self.submits: list[dict] = []
        self.cancelled: list[str] = []
        self.lock = threading.Lock()
        server.expect_request("/submit", method="POST").respond_with_handler(self._submit)
        server.expect_request(re.compile(r"^/jobs/[^/]+$"), method="GET").respond_with_handler(self._status)
        server.expect_request(re.compile(r"^/jobs/[^/]+/cancel$"), method="POST").respond_with_handler(self._cancel)

    def url(self, path: str) -> str:
        return self.server.url_for(path)

    def params(self, **overrides) -> dict:
        return {
            "submit_url": self.url("/submit"),
            "submit_body": {"pipeline_run_id": "{label}"},
            "status_url": self.url("/jobs/{job_id}"),
            "poll_interval_s": 0.1,
            "max_poll_interval_s": 0.1,
            **overrides,
        }

    def _submit(self, request: Request) -> Response:
        with self.lock:
            self.submits.append(request.json)
        return _json({"job_id": f"wb-{request.json['pipeline_run_id']}", "status": "queued"})

    def _status(self, request: Request) -> Response:
        job_id = request.path.rsplit("/", 1)[1]
        with self.lock:
            self.polls[job_id] += 1
            count = self.polls[job_id]
        label = job_id.removeprefix("wb-")
        if count <= self.polls_needed or label.startswith("slow"):
            return _json({"job_id": job_id, "status": "RUNNING", "progress": count})
        if label.startswith("bad"):
            return _json({"job_id": job_id, "status": "failed", "error_message": f"pipeline {label}: disk full"})
        return _json({"job_id": job_id, "status": "succeeded", "output": f"s3://out/{label}", "polls": count})

    def _cancel(self, request: Request) -> Response:
        with self.lock:
            self.cancelled.append(request.path.split("/")[2])
        return _json({"cancelled": True})


def _json(data: dict, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


@pytest.fixture
def workbench(httpserver) -> FakeWorkbench:
    return FakeWorkbench(httpserver)


def step(label: str = "run-1", state: dict | None = None, **params):
    """One run of a workbench.job operation: its result, or the Reschedule it asked for."""
    try:
        return run_operation("workbench.job", label, state=state, **params)
    except Reschedule as request:
        return request


# --- one operation, run by run ------------------------------------------------------------------


def test_it_submits_then_polls_with_doubling_intervals_until_the_job_succeeds(workbench):
    params = workbench.params(poll_interval_s=1, max_poll_interval_s=3)
    waits, state, outcome = [], None, None
    started = time.monotonic()
    while True:
        outcome = step("run-1", state, **params)
        if not isinstance(outcome, Reschedule):
            break
        waits.append(outcome.after_s)
        state = outcome.state
    # Nothing slept here: the waits are asked of the engine, not taken.
    assert time.monotonic() - started < 1
    assert workbench.submits == [{"pipeline_run_id": "run-1"}]
    assert waits == [1, 2, 3, 3]
    assert (state["job_id"], state["polls"], state["last_state"]) == ("wb-run-1", 3, "running")
    assert outcome == {"job_id": "wb-run-1", "status": "succeeded", "output": "s3://out/run-1", "polls": 4}


def test_a_finished_job_adds_a_row_with_its_id_final_state_and_what_it_reported(httpserver):
    httpserver.expect_request("/submit").respond_with_json({"job_id": "j-9"})
    final = {"status": "SUCCEEDED", "rows_written": 120, "outputs": {"path": "s3://out/j-9", "files": ["a"]}}
    httpserver.expect_request("/jobs/j-9").respond_with_json(final)
    params = {"submit_url": httpserver.url_for("/submit"), "status_url": httpserver.url_for("/jobs/{job_id}")}
    waiting = step("run-9", None, **params)
    result, [row] = run_operation_with_rows("workbench.job", "run-9", state=waiting.state, **params)
    assert result == final
    assert row == {
        "job_id": "j-9",
        "state": "SUCCEEDED",
        "polls": 1,
        "status": "SUCCEEDED",
        "rows_written": 120,
        "outputs.path": "s3://out/j-9",
    }


def test_a_finished_workbench_batch_shows_its_result_rows_on_the_batch_page(
    transactional_db, redis_clean, alice, client, workbench
):
    """It showed "No result rows yet": the final status answer was the result and no row was added."""
    batch = workbench_batch(alice, workbench, ["run-a", "run-b"], params={"poll_interval_s": 0.1})
    workbench.polls_needed = 0
    deadline = time.monotonic() + 20
    while not batch.is_terminal:
        assert time.monotonic() < deadline, "the batch did not finish"
        batch = run_inline(batch)  # one lane in this process: submits, then polls when due
        time.sleep(0.05)
    assert batch.status == "completed"
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/?tab=results").content.decode()
    assert "No result rows yet" not in page
    assert ">wb-run-a<" in page and ">succeeded<" in page and ">s3://out/run-b<" in page


def test_the_job_id_and_state_keys_may_be_dotted_paths(httpserver):
    httpserver.expect_request("/submit").respond_with_json({"data": {"run": {"id": 42}}})
    httpserver.expect_request("/runs/42").respond_with_json({"run": {"phase": "Done"}, "rows": 10})
    params = {
        "submit_url": httpserver.url_for("/submit"),
        "status_url": httpserver.url_for("/runs/{job_id}"),
        "job_id_key": "data.run.id",
        "state_key": "run.phase",
    }
    first = step(**params)
    assert isinstance(first, Reschedule) and first.state["job_id"] == 42 and first.after_s == 5
    assert step(state=first.state, **params) == {"run": {"phase": "Done"}, "rows": 10}


def test_custom_state_lists_decide_what_ended(httpserver):
    httpserver.expect_request("/jobs/7").respond_with_json({"status": "GREEN"})
    params = {
        "submit_url": httpserver.url_for("/submit"),
        "status_url": httpserver.url_for("/jobs/{job_id}"),
        "completed_states": "green",
        "failed_states": "red",
    }
    assert step(state={"job_id": 7, "submitted_at": time.time()}, **params) == {"status": "GREEN"}


def test_a_failed_external_job_fails_the_operation_with_its_own_message(workbench):
    workbench.polls_needed = 0
    with pytest.raises(PermanentFailure) as caught:
        step("bad-7", {"job_id": "wb-bad-7", "submitted_at": time.time()}, **workbench.params())
    assert caught.value.error_type == "ExternalJobFailed"
    assert str(caught.value) == "Job wb-bad-7 ended failed: pipeline bad-7: disk full"


def test_the_failure_message_is_the_first_message_key_present_in_its_order(httpserver):
    httpserver.expect_request("/jobs/3").respond_with_json(
        {"state": "ERROR", "detail": "generic", "Reason": {"text": "quota exceeded"}}
    )
    params = {
        "submit_url": httpserver.url_for("/submit"),
        "status_url": httpserver.url_for("/jobs/{job_id}"),
        "state_key": "state",
        "message_keys": "missing, Reason.text, detail",
    }
    with pytest.raises(PermanentFailure) as caught:
        step(state={"job_id": 3, "submitted_at": time.time()}, **params)
    assert str(caught.value) == "Job 3 ended ERROR: quota exceeded"


def test_a_submit_answer_without_a_job_id_is_a_clear_failure(httpserver):
    httpserver.expect_request("/submit").respond_with_data('{"accepted": true}', content_type="application/json")
    with pytest.raises(PermanentFailure) as caught:
        step(submit_url=httpserver.url_for("/submit"), status_url=httpserver.url_for("/jobs/{job_id}"))
    assert caught.value.error_type == "MissingJobId"
    assert str(caught.value) == """The submit answer has no job id at 'job_id': {"accepted": true}"""


def test_a_refused_submit_is_permanent_and_an_unavailable_one_retryable(httpserver):
    params = {"submit_url": httpserver.url_for("/submit"), "status_url": httpserver.url_for("/jobs/{job_id}")}
    httpserver.expect_oneshot_request("/submit").respond_with_json({"detail": "bad pipeline"}, status=422)
    with pytest.raises(PermanentFailure, match="HTTP 422 .*bad pipeline"):
        step(**params)
    httpserver.expect_oneshot_request("/submit").respond_with_data("maintenance", status=503)
    with pytest.raises(OperationFailure, match="HTTP 503 .*maintenance") as caught:
        step(**params)
    assert not isinstance(caught.value, PermanentFailure)


def test_failed_polls_are_waited_out_with_backoff_then_fail(httpserver):
    httpserver.expect_request("/jobs/9").respond_with_data("down", status=502)
    params = {
        "submit_url": httpserver.url_for("/submit"),
        "status_url": httpserver.url_for("/jobs/{job_id}"),
        "poll_interval_s": 1,
        "max_poll_interval_s": 10,
        "max_poll_errors": 2,
    }
    state = {"job_id": 9, "submitted_at": time.time(), "interval": 1}
    first = step(state=state, **params)
    second = step(state=first.state, **params)
    assert (first.after_s, second.after_s) == (2, 4)
    assert second.state["poll_errors"] == 2 and "HTTP 502" in second.state["last_error"]
    with pytest.raises(OperationFailure, match="HTTP 502"):
        step(state=second.state, **params)


def test_past_the_deadline_it_gives_up_and_cancels_the_job(workbench):
    params = workbench.params(deadline_s=60, cancel_url=workbench.url("/jobs/{job_id}/cancel"))
    state = {"job_id": "wb-slow-1", "submitted_at": time.time() - 61, "polls": 5}
    with pytest.raises(PermanentFailure) as caught:
        step("slow-1", state, **params)
    assert caught.value.error_type == "Deadline"
    assert str(caught.value) == "Gave up on job wb-slow-1 after 60 s; it was still running."
    assert workbench.cancelled == ["wb-slow-1"]


def test_the_last_wait_ends_at_the_deadline(workbench):
    params = workbench.params(poll_interval_s=30, max_poll_interval_s=600, deadline_s=100)
    state = {"job_id": "wb-slow-2", "submitted_at": time.time() - 90, "interval": 30}
    outcome = step("slow-2", state, **params)
    assert 9 <= outcome.after_s <= 10


@pytest.mark.parametrize(
    "params, path, message",
    [
        ({"status_url": "https://wb/jobs/status"}, "params.status_url", "Must contain the {job_id} placeholder."),
        ({"cancel_url": "https://wb/cancel"}, "params.cancel_url", "Must contain the {job_id} placeholder."),
        ({"submit_url": "https://wb/{job_id}"}, "params.submit_url", "No value for placeholder(s) {job_id}"),
        ({"max_poll_interval_s": 1, "poll_interval_s": 5}, "params.max_poll_interval_s", "at least the first"),
        ({"failed_states": "done,broken"}, "params.failed_states", "Also listed as completed: done."),
        ({"deadline_s": 8 * 86400}, "params.deadline_s", "less than or equal to 604800"),
    ],
)
def test_bad_params_are_refused_at_creation(alice, params, path, message):
    base = {"submit_url": "https://wb/submit", "status_url": "https://wb/jobs/{job_id}"}
    with pytest.raises(InvalidInput) as caught:
        services.batch_create(owner=alice, type="workbench.job", name="wb", items=["a"], params={**base, **params})
    assert any(message in text for text in caught.value.errors.get(path, [])), caught.value.errors


# --- whole batches on real workers ----------------------------------------------------------------


def workbench_batch(owner, workbench: FakeWorkbench, labels, **options):
    params = workbench.params(**options.pop("params", {}))
    return services.batch_create(
        owner=owner, type="workbench.job", name="workbench", items=list(labels), params=params, **options
    )


@pytest.mark.workers
def test_fifty_jobs_on_two_workers_finish_without_a_worker_waiting_between_polls(alice, workers, workbench):
    """Each job answers "running" to 3 polls and ends at the 4th, polls a second apart. A worker
    sleeping between polls would hold its slot 4 s per job: 50 jobs over 2 slots would take 100 s
    or more. Here every poll is its own short claim, and the operation is pending (with its job
    id) in between."""
    workers.start(2)
    labels = [f"run-{i:02}" for i in range(50)]
    started = time.monotonic()
    batch = workbench_batch(
        alice, workbench, labels, max_parallel=2, params={"poll_interval_s": 1, "max_poll_interval_s": 1}
    )
    seen_waiting, peak_running = set(), 0
    while True:
        batch.refresh_from_db()
        assert batch.running <= 2
        peak_running = max(peak_running, batch.running)
        waiting = Operation.objects.filter(batch=batch, status="pending", not_before__isnull=False)
        seen_waiting |= {op.label for op in waiting if (op.state or {}).get("job_id") == f"wb-{op.label}"}
        if batch.is_terminal:
            break
        assert time.monotonic() - started < 60, "the batch did not finish"
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert batch.status == "completed", batch.operations.exclude(status="completed").values_list("label", "error")
    assert elapsed < 30, f"{elapsed:.1f} s: workers seem to have waited between polls"
    assert sorted(workbench.polls.values()) == [4] * 50  # three "running", then "succeeded"
    assert len(workbench.submits) == 50
    operations = list(batch.operations.all())
    # One claim to submit plus one per poll: the operation left its worker between polls.
    assert {op.attempts for op in operations} == {5}
    assert {op.auto_retries for op in operations} == {0}
    assert all(
        op.result["status"] == "succeeded" and op.result["output"] == f"s3://out/{op.label}" for op in operations
    )
    assert all(op.duration_ms >= 4000 for op in operations)  # submit to end, not the last poll's run
    assert len(seen_waiting) >= 25, seen_waiting
    assert peak_running >= 1
    assert_counters_match_rows(batch)


@pytest.mark.workers
def test_external_failures_and_the_deadline_fail_their_operations_only(alice, workers, workbench):
    workers.start(1)
    batch = workbench_batch(
        alice,
        workbench,
        ["good", "bad-1", {"label": "slow-1", "params": {"deadline_s": 2}}],
        max_parallel=3,
        max_retries=2,
        params={"cancel_url": workbench.url("/jobs/{job_id}/cancel")},
    )
    wait_until_finished(batch, 60)
    operations = {op.label: op for op in batch.operations.all()}
    assert batch.status == "partial_success"
    assert operations["good"].status == "completed"
    bad = operations["bad-1"]
    # Failed outside: no automatic retry would make it succeed, so none is used.
    assert (bad.status, bad.error_type, bad.auto_retries) == ("failed", "ExternalJobFailed", 0)
    assert bad.error == "Job wb-bad-1 ended failed: pipeline bad-1: disk full"
    slow = operations["slow-1"]
    assert (slow.status, slow.error_type) == ("failed", "Deadline")
    assert slow.error == "Gave up on job wb-slow-1 after 2 s; it was still running."
    assert workbench.cancelled == ["wb-slow-1"]
    assert slow.duration_ms >= 2000
    assert_counters_match_rows(batch)


@pytest.mark.workers
def test_cancelling_the_batch_skips_waiting_jobs_and_calls_their_cancel_url(alice, workers, workbench):
    workers.start(1)
    batch = workbench_batch(
        alice,
        workbench,
        ["slow-a", "slow-b", "slow-c"],
        max_parallel=3,
        params={
            "poll_interval_s": 0.5,
            "max_poll_interval_s": 0.5,
            "cancel_url": workbench.url("/jobs/{job_id}/cancel"),
        },
    )
    wait_for(lambda: sum(workbench.polls.values()) >= 3, 30, message="every job to be polled once")
    services.batch_cancel(batch=batch, reason="enough")
    batch.refresh_from_db()
    assert (batch.status, batch.skipped) == ("cancelled", 3)
    wait_for(lambda: len(workbench.cancelled) == 3, 30, message="the cancel URLs to be called")
    assert sorted(workbench.cancelled) == ["wb-slow-a", "wb-slow-b", "wb-slow-c"]
    polls_at_cancel = sum(workbench.polls.values())
    time.sleep(1.5)
    assert sum(workbench.polls.values()) <= polls_at_cancel + 3  # at most a poll under way; none after
    assert set(batch.operations.values_list("status", flat=True)) == {"skipped"}
    assert_counters_match_rows(batch)


def test_the_api_shows_the_job_id_of_a_waiting_operation(alice):
    params = {"submit_url": "https://wb/submit", "status_url": "https://wb/jobs/{job_id}"}
    batch = services.batch_create(owner=alice, type="workbench.job", name="wb", items=["a"], params=params)
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_reschedule(claim=claim, after_s=60, state={"job_id": "wb-a", "last_state": "running"})
    operation = ApiClient(alice).get(f"/api/batches/{batch.pk}/operations").json()["items"][0]
    assert (operation["status"], operation["state"]) == ("pending", {"job_id": "wb-a", "last_state": "running"})
