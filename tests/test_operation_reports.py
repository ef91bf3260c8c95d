"""What an operation says of itself while it runs: ctx.progress, ctx.log and ctx.heartbeat's note,
written by its worker while it runs, kept with its attempt, shown by the API and the live pages."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

import tests.engine_three_optypes  # noqa: F401  (registers the types in this process)
from jobs import services
from jobs.engine.reports import LOG_BYTES, LOG_LINES, Report
from jobs.live import publisher
from jobs.models import Batch, OperationAttempt
from jobs.services.operations import Said
from tests.conftest import wait_for
from tests.engine_three_optypes import release_key
from tests.test_api import ApiClient
from tests.test_consumers import connect, receive_until
from tests.test_engine import wait_until_finished


def test_a_report_keeps_the_last_lines_within_its_bounds():
    report = Report()
    for number in range(LOG_LINES + 100):
        report.log(f"line {number}")
    said = report.said()
    assert said is not None
    lines = said.log.split("\n")
    assert (len(lines), lines[0], lines[-1]) == (LOG_LINES, "line 100", f"line {LOG_LINES + 99}")
    report.log("x" * 40_000 + "\n" + "y" * 40_000)
    said = report.said()
    assert said is not None
    assert len(said.log.encode()) <= LOG_BYTES
    assert said.log.split("\n")[-1] == "y" * 40_000


def test_progress_must_be_a_number_and_a_report_is_written_once_per_change():
    report = Report()
    assert report.said() is None  # never reported: nothing to write
    for bad in (-1, float("nan"), "3", True):
        with pytest.raises(ValueError, match="progress done"):
            report.progress(bad)
    report.progress(2, total=5, note="two")
    due = report.due(now=100.0)
    assert due is not None and due[1] == Said(2.0, 5.0, "two", "")
    report.mark_written(due[0], now=100.0)
    assert report.due(now=200.0) is None  # nothing changed since
    report.log("more")
    assert report.due(now=100.1) is None  # changed, but written less than half a second ago
    assert report.due(now=100.6) is not None


@pytest.mark.workers
def test_progress_and_log_show_while_it_runs_and_stay_with_the_attempt(alice, workers, redis_clean):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.engine_three_optypes"
    workers.start(1)
    api = ApiClient(alice)
    response = api.post(
        "/api/batches",
        {"type": "example.report", "name": "reports", "items": ["fail"], "params": {"lines": 600, "hold": True}},
    )
    assert response.status_code == 201, response.content
    batch_id = response.json()["id"]
    url = f"/api/batches/{batch_id}/operations/1"

    def reported():
        body = api.get(url).json()
        return body if body["status"] == "running" and body["progress"] and body["progress"]["note"] else None

    body = wait_for(reported, 30, message="the running operation's report")
    assert body["progress"] == {"done": 600.0, "total": 600.0, "note": "almost done", "percent": 100.0}
    lines = body["log"].split("\n")
    assert (len(lines), lines[0], lines[-1]) == (LOG_LINES, "line 101", "line 600")
    assert body["attempt_records"][-1]["outcome"] == "running"
    assert body["attempt_records"][-1]["progress"]["done"] == 600.0

    redis_clean.set(release_key(batch_id), 1)
    batch = Batch.objects.get(pk=batch_id)
    wait_until_finished(batch)
    attempt = OperationAttempt.objects.get(operation__batch=batch)
    assert (attempt.outcome, attempt.progress_done, attempt.progress_note) == ("failed", 600.0, "almost done")
    assert attempt.log.split("\n")[-1] == "line 600"
    body = api.get(url).json()
    assert body["status"] == "failed"
    assert body["log"] == attempt.log
    assert body["attempt_records"][0]["progress"]["note"] == "almost done"
    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/batches/{batch_id}/operations/1/")
    assert b"almost done" in page.content and b"line 600" in page.content


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_report_is_pushed_to_the_operation_page_and_the_batch_pages_current_column(redis_clean, alice):
    batch = await sync_to_async(services.batch_create)(
        owner=alice, type="example.report", name="live reports", items=["one", "two"]
    )
    claims = await sync_to_async(services.operations_claim)(batch_id=str(batch.pk), worker="w", limit=1)
    assert isinstance(claims, list)
    claim = claims[0]
    operation_page = await connect(f"/ws/batches/{batch.pk}/operations/1/", alice)
    batch_page = await connect(f"/ws/batches/{batch.pk}/", alice)
    await operation_page.receive_from(timeout=10)
    await batch_page.receive_from(timeout=10)

    said = Said(3.0, 4.0, "copying", "first line\nsecond line")
    await sync_to_async(services.operations_report)(reports=[(claim.operation_id, claim.attempt, said)])
    await sync_to_async(publisher.operations_reported)(batch.pk)
    message = await receive_until(operation_page, "second line")
    assert "3 / 4 (75 %) · copying" in message
    message = await receive_until(batch_page, f"batch-{batch.pk}-current")
    assert "3 / 4 (75 %) · copying" in message

    # A report of an attempt that is no longer the running one changes nothing.
    stale = Said(1.0, 4.0, "stale", "")
    await sync_to_async(services.operations_report)(reports=[(claim.operation_id, claim.attempt + 1, stale)])
    operation = await sync_to_async(batch.operations.get)(seq=1)
    assert operation.progress_note == "copying"
    await operation_page.disconnect()
    await batch_page.disconnect()
    await asyncio.sleep(0)
