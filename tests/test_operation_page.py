"""One operation through the fronts: `GET /api/batches/{id}/operations/{seq}`, its retry
and cancel (API, page, command line), the page `/batches/<id>/operations/<seq>/` and its live
socket; owners, another user (404) and staff (no tracebacks). On real workers: attempts recorded
across an automatic retry, and one operation cancelled and retried while its batch goes on."""

import io
import re
import time

import pytest
from asgiref.sync import sync_to_async
from django import forms
from django.core.management import CommandError, call_command
from django.test import Client

from jobs import services
from jobs.live.consumers import FORBIDDEN
from jobs.models import Batch, OperationAttempt
from jobs.optypes.base import OperationType, register
from tests.conftest import wait_for
from tests.invariants import assert_counters_match_rows
from tests.test_api import ApiClient
from tests.test_consumers import connect, receive_until
from tests.test_operation_actions import claim, completed, failed, record


class SecretForm(forms.Form):
    region = forms.CharField()
    token = forms.CharField(required=False)


register(
    OperationType(
        key="test.secret", label="Test: secret", run=lambda ctx: {"ok": True}, form=SecretForm, secret_params=("token",)
    )
)


def finished_batch(owner, **options) -> Batch:
    """#1 completed with a result and rows, #2 failed for good with a traceback."""
    options.setdefault("type", "demo.sleep")
    batch = services.batch_create(owner=owner, name="drill", items=["alpha", "beta"], max_parallel=2, **options)
    first, second = claim(batch, "worker-7", limit=2)
    record(completed(first), failed(second, retryable=False))
    batch.refresh_from_db()
    return batch


def operation_url(batch: Batch, seq: int, tail: str = "") -> str:
    return f"/api/batches/{batch.pk}/operations/{seq}{tail}"


# --- API ----------------------------------------------------------------------------------------


def test_the_api_shows_one_operation_with_its_attempts_to_its_owner(alice):
    batch = finished_batch(alice)
    response = ApiClient(alice).get(operation_url(batch, 2))
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["seq"], body["label"], body["status"], body["error_type"]) == (2, "beta", "failed", "Boom")
    assert body["effective_params"] == {"duration_ms": 100, "failure_rate": 0.0, "fail_attempts": 0}
    [attempt] = body["attempt_records"]
    assert (attempt["number"], attempt["worker"], attempt["outcome"], attempt["duration_ms"]) == (
        1,
        "worker-7",
        "failed",
        15,
    )
    assert attempt["traceback"].startswith("Traceback") and attempt["started_at"] and attempt["finished_at"]
    assert body["external_job"] is None and body["artifacts"] == []

    done = ApiClient(alice).get(operation_url(batch, 1), {"limit": 1}).json()
    assert (done["result"], done["result_rows"]) == ({"ok": True}, {"items": [{"n": 1}], "count": 1})


def test_another_users_operation_is_a_404_and_staff_see_it_without_tracebacks(alice, bob, staff):
    batch = finished_batch(alice)
    assert ApiClient(bob).get(operation_url(batch, 2)).status_code == 404
    assert ApiClient(bob).post(operation_url(batch, 2, "/retry")).status_code == 404
    assert ApiClient(alice).get(operation_url(batch, 3)).status_code == 404
    seen = ApiClient(staff).get(operation_url(batch, 2)).json()
    assert seen["attempt_records"][0]["error"] == "boom on attempt 1"
    assert seen["attempt_records"][0]["traceback"] is None


def test_secret_params_are_masked_in_the_api_and_on_the_page(alice, client):
    batch = services.batch_create(
        owner=alice,
        type="test.secret",
        name="secret",
        items=[{"label": "eu", "params": {"token": "item-s3cret"}}, "us"],
        params={"region": "eu-west", "token": "base-s3cret"},
        start=False,
    )
    api = ApiClient(alice)
    first, second = (api.get(operation_url(batch, seq)).json() for seq in (1, 2))
    assert first["effective_params"] == {"region": "eu-west", "token": "***"} == second["effective_params"]
    assert first["params"] == {"token": "***"}
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/operations/1/").content.decode()
    assert "eu-west" in page and "s3cret" not in page


def test_one_operation_is_retried_and_cancelled_through_the_api(alice):
    batch = finished_batch(alice)
    api = ApiClient(alice)
    response = api.post(operation_url(batch, 2, "/retry"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["operation"]["status"], body["batch"]["status"], body["batch"]["pending"]) == ("pending", "queued", 1)
    conflict = api.post(operation_url(batch, 1, "/retry"))
    assert conflict.status_code == 409 and "Only a failed or skipped operation" in conflict.json()["message"]

    cancelled = api.post(operation_url(batch, 2, "/cancel")).json()
    assert (cancelled["operation"]["status"], cancelled["batch"]["status"]) == ("skipped", "partial_success")
    assert api.post(operation_url(batch, 2, "/cancel")).status_code == 409
    assert_counters_match_rows(batch)


# --- pages --------------------------------------------------------------------------------------


def test_the_operation_page_shows_params_attempts_result_and_rows_to_the_owner(alice, client):
    batch = finished_batch(alice)
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/operations/2/").content.decode()
    assert "Attempt 1" in page and "worker-7" in page and "boom on attempt 1" in page
    assert "Traceback (most recent call last)" in page
    assert f'ws-connect="/ws/batches/{batch.pk}/operations/2/"' in page
    assert re.search(r"<button[^>]*operations/2/retry/", page) and "operations/2/cancel/" not in page
    done = client.get(f"/batches/{batch.pk}/operations/1/").content.decode()
    assert '<span class="json-key">&quot;ok&quot;</span>: <span class="json-bool">true</span>' in done
    assert "1 row this operation added" in done and "duration_ms" in done


def test_staff_see_the_page_without_tracebacks_and_others_get_a_404(alice, bob, staff, client):
    batch = finished_batch(alice)
    client.force_login(staff)
    page = client.get(f"/batches/{batch.pk}/operations/2/").content.decode()
    assert "boom on attempt 1" in page and "Traceback (most" not in page
    client.force_login(bob)
    assert client.get(f"/batches/{batch.pk}/operations/2/").status_code == 404
    client.force_login(alice)
    assert client.get(f"/batches/{batch.pk}/operations/9/").status_code == 404


def test_the_page_retries_and_cancels_one_operation_in_place(alice, client):
    batch = finished_batch(alice)
    client.force_login(alice)
    url = f"/batches/{batch.pk}/operations/2/"
    live = client.post(url + "retry/", HTTP_HX_REQUEST="true")
    assert live.status_code == 200
    html = live.content.decode()
    assert html.startswith('\n<section id="operation-') or html.lstrip().startswith("<section id=")
    assert "chip-pending" in html and "back in the queue" in html and "cancel/" in html
    refused = client.post(url + "retry/", HTTP_HX_REQUEST="true")
    assert refused.status_code == 409 and "Only a failed or skipped operation" in refused.content.decode()
    assert client.post(url + "cancel/").status_code == 302
    batch.refresh_from_db()
    assert batch.status == "partial_success"
    assert client.get(url + "delete/").status_code == 405
    assert client.post(url + "delete/").status_code == 404


def test_the_operations_table_links_each_row_to_its_page(alice, client):
    batch = finished_batch(alice)
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/?tab=operations").content.decode()
    assert f'<a href="/batches/{batch.pk}/operations/1/">alpha</a>' in page
    assert f'<a href="/batches/{batch.pk}/operations/2/">beta</a>' in page


# --- command line ---------------------------------------------------------------------------------


def batch_command(*args) -> str:
    out = io.StringIO()
    call_command("batch", *[str(arg) for arg in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_line_retries_and_cancels_one_operation(alice):
    batch = finished_batch(alice)
    assert "back in the queue; the batch is queued" in batch_command("retry", batch.short_id, "--op", 2)
    assert "the batch is partial success" in batch_command("cancel", batch.short_id, "--op", "2")
    for args, message in (
        (("retry", batch.short_id, "--op", 1), "Only a failed or skipped operation"),
        (("cancel", batch.short_id, "--op", 5), "has no operation #5"),
    ):
        with pytest.raises(CommandError, match=message) as caught:
            batch_command(*args)
        assert caught.value.returncode == 2
    batch.refresh_from_db()
    assert batch.status == "partial_success"


# --- live socket ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_operation_socket_sends_its_state_and_follows_a_retry(redis_clean, alice, bob):
    batch = await sync_to_async(finished_batch)(alice)
    path = f"/ws/batches/{batch.pk}/operations/2/"
    refused = await connect(path, bob)
    assert await refused.receive_output(timeout=5) == {"type": "websocket.close", "code": FORBIDDEN}
    await refused.disconnect()
    communicator = await connect(path, alice)
    first = await communicator.receive_from(timeout=5)
    assert first.startswith('<section id="operation-') and 'hx-swap-oob="true"' in first and "chip-failed" in first
    await sync_to_async(services.operation_retry)(batch=batch, seq=2, by=alice)
    message = await receive_until(communicator, "chip-pending")
    assert "Result rows" in message  # the rows block comes along
    await communicator.disconnect()


# --- on real workers --------------------------------------------------------------------------------


@pytest.mark.workers
def test_on_real_workers_attempts_are_kept_and_one_operation_is_cancelled_then_retried(alice, workers):
    workers.env["BATCHSITE_WORKER_CONCURRENCY"] = "1"  # a cancelled operation must give its slot back
    workers.start(1)
    batch = services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="on workers",
        items=[
            {"label": "slow", "params": {"duration_ms": 8000}},
            {"label": "flaky", "params": {"fail_attempts": 1}},
            "steady",
        ],
        params={"duration_ms": 50},
        max_parallel=1,
        max_retries=1,
        retry_backoff_s=0,
    )
    slow = batch.operations.get(seq=1)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).running == 1, 30, message="the slow operation to start")
    cancelled_at = time.monotonic()
    assert ApiClient(alice).post(operation_url(batch, 1, "/cancel")).status_code == 200
    wait_for(lambda: Batch.objects.get(pk=batch.pk).is_terminal, 30, message="the batch to finish")
    # The other two ran in the slot the cancel freed, well before the slow sleep would have ended.
    assert time.monotonic() - cancelled_at < 7
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.skipped) == ("partial_success", 2, 1)
    flaky = list(OperationAttempt.objects.filter(operation__label="flaky").order_by("number"))
    assert [(a.number, a.outcome, a.error_type) for a in flaky] == [(1, "failed", "DemoFailure"), (2, "completed", "")]
    assert "Traceback (most recent call last)" in flaky[0].traceback and "DemoFailure" in flaky[0].traceback
    assert all(a.worker and a.started_at and a.duration_ms is not None for a in flaky)

    batch_command("retry", batch.short_id, "--op", 1)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).running == 1, 30, message="the slow operation to run again")
    batch_command("cancel", batch.short_id, "--op", 1)
    batch.refresh_from_db()
    assert (batch.status, batch.skipped) == ("partial_success", 1)
    assert list(slow.attempt_records.order_by("number").values_list("number", "outcome")) == [
        (1, "cancelled"),
        (2, "cancelled"),
    ]
    assert_counters_match_rows(batch)


def test_the_api_of_one_operation_needs_a_session_or_token(alice):
    batch = finished_batch(alice)
    assert Client().get(operation_url(batch, 1)).status_code == 401


def test_the_admin_operation_page_lists_its_attempts(admin_client, alice):
    batch = finished_batch(alice)
    operation = batch.operations.get(seq=2)
    page = admin_client.get(f"/admin/jobs/operation/{operation.pk}/change/").content.decode()
    assert "boom on attempt 1" in page and "worker-7" in page and "Traceback (most recent call last)" in page


def test_an_external_job_shows_its_id_and_last_polled_state(alice, client):
    params = {"submit_url": "https://wb.example.com/submit", "status_url": "https://wb.example.com/jobs/{job_id}"}
    batch = services.batch_create(
        owner=alice, type="workbench.job", name="wb", items=["r1"], params=params, start=False
    )
    # What a workbench.job operation saves between polls (tests/test_optype_workbench.py runs them).
    batch.operations.update(state={"job_id": "wb-77", "last_state": "queued", "polls": 2, "interval": 4})
    body = ApiClient(alice).get(operation_url(batch, 1)).json()
    assert body["external_job"] == {"job_id": "wb-77", "state": "queued", "polls": 2, "last_error": ""}
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/operations/1/").content.decode()
    assert "External job" in page and "wb-77" in page and "queued" in page
    batch.operations.update(status="completed")
    assert ApiClient(alice).get(operation_url(batch, 1)).json()["external_job"]["state"] == "completed"


def test_an_external_job_that_ended_failed_shows_its_final_answer(alice, client):
    params = {"submit_url": "https://wb.example.com/submit", "status_url": "https://wb.example.com/jobs/{job_id}"}
    batch = services.batch_create(
        owner=alice, type="workbench.job", name="wb", items=["r1"], params=params, start=False
    )
    # The state saved by the last poll that saw it running; the next poll found it failed.
    batch.operations.update(
        state={"job_id": "wb-78", "last_state": "running", "polls": 1, "interval": 4},
        status="failed",
        error_type="ExternalJobFailed",
        error="Job wb-78 ended FAILED: out of memory on node 3",
    )
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/operations/1/").content.decode()
    external = page[page.index("<h2>External job</h2>") : page.index("<h2>Attempts</h2>")]
    assert "Last polled state" not in external and "running" not in external
    assert "Final state</dt><dd>failed" in external
    assert "out of memory on node 3" in external and "Polls</dt><dd>2" in external
    assert ApiClient(alice).get(operation_url(batch, 1)).json()["external_job"]["state"] == "failed"
