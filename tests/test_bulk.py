"""One action on many batches: POST /api/batches/bulk, the History page's bulk form, `batch bulk`.
Each batch goes through its own service call; a batch the user may not see is skipped as
"not found", one whose status refuses the action with the reason."""

import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from jobs import services
from jobs.models import Batch, BatchEvent, BatchEventKind, BatchStatus
from jobs.services import tokens

BULK = "/api/batches/bulk"


@pytest.fixture(autouse=True)
def _redis(redis_clean):
    """Creating a batch enqueues its lanes in Redis (no worker runs them here)."""
    yield


@pytest.fixture
def api(alice):
    _, key = tokens.token_create(user=alice, name="t")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def post(body):
        return client.post(BULK, json.dumps(body), content_type="application/json")

    return post


def queued(owner, name="nightly") -> Batch:
    batch = services.batch_create(owner=owner, type="noop", name=name, items=["a", "b"])
    assert batch.status == BatchStatus.QUEUED
    return batch


def status_of(batch: Batch) -> str:
    batch.refresh_from_db()
    return batch.status


def test_it_pauses_the_listed_batches_and_skips_another_users_as_not_found(api, alice, bob):
    first, second, bobs = queued(alice), queued(alice), queued(bob)
    response = api({"action": "pause", "ids": [str(first.pk), str(second.pk), str(bobs.pk)]})
    assert response.status_code == 200
    assert response.json() == {"changed": 2, "skipped": [{"id": str(bobs.pk), "reason": "not found"}]}
    assert (status_of(first), status_of(second), status_of(bobs)) == ("paused", "paused", "queued")
    # One timeline entry per batch changed.
    assert BatchEvent.objects.filter(kind=BatchEventKind.PAUSED).count() == 2
    assert not BatchEvent.objects.filter(batch=bobs, kind=BatchEventKind.PAUSED).exists()


def test_a_batch_whose_status_refuses_the_action_is_skipped_with_the_reason(api, alice):
    running, paused = queued(alice), queued(alice)
    services.batch_pause(batch=paused)
    response = api({"action": "resume", "ids": [str(running.pk), str(paused.pk)]})
    body = response.json()
    assert body["changed"] == 1
    [skipped] = body["skipped"]
    assert skipped["id"] == str(running.pk)
    assert "queued" in skipped["reason"].lower()
    assert status_of(paused) == "queued"


def test_unknown_malformed_and_repeated_ids_are_skipped_once_as_not_found(api, alice):
    batch = queued(alice)
    ghost = str(uuid.uuid4())
    response = api({"action": "cancel", "ids": [str(batch.pk), "nope", ghost, str(batch.pk)]})
    assert response.json() == {
        "changed": 1,
        "skipped": [{"id": "nope", "reason": "not found"}, {"id": ghost, "reason": "not found"}],
    }
    assert status_of(batch) == "cancelled"


def test_a_filter_acts_on_every_matching_batch_the_user_may_see(api, alice, bob):
    mine, other_name, bobs = queued(alice, "nightly load"), queued(alice, "weekly"), queued(bob, "nightly load")
    response = api({"action": "cancel", "filter": {"q": "nightly", "status": "queued"}})
    assert response.json() == {"changed": 1, "skipped": []}
    assert (status_of(mine), status_of(other_name), status_of(bobs)) == ("cancelled", "queued", "queued")


def test_delete_skips_an_active_batch_and_deletes_a_finished_one(api, alice):
    active, finished = queued(alice), queued(alice)
    services.batch_cancel(batch=finished)
    response = api({"action": "delete", "ids": [str(active.pk), str(finished.pk)]})
    body = response.json()
    assert body["changed"] == 1
    assert body["skipped"][0]["id"] == str(active.pk) and "cancel it first" in body["skipped"][0]["reason"]
    assert list(Batch.objects.values_list("pk", flat=True)) == [active.pk]


def test_retry_failed_skips_a_batch_whose_status_allows_no_retry(api, alice):
    batch = queued(alice)
    response = api({"action": "retry_failed", "ids": [str(batch.pk)]})
    assert response.json()["changed"] == 0
    assert response.json()["skipped"][0]["reason"] == "Cannot retry failed operations of a queued batch."


@pytest.mark.parametrize(
    "body, field",
    [
        ({"action": "pause"}, "ids"),
        ({"action": "pause", "ids": [], "filter": {}}, "ids"),
        ({"action": "explode", "ids": []}, "action"),
        ({"action": "pause", "filter": {"type": "no.such"}}, "type"),
        ({"action": "pause", "filter": {"created_after": "yesterday"}}, "created_after"),
        ({"action": "pause", "ids": ["x"] * 1001}, "ids"),
        ({"action": "pause", "ids": [], "limit": 3}, "limit"),
    ],
)
def test_bad_bodies_are_a_422_with_the_field_and_change_nothing(api, alice, body, field):
    batch = queued(alice)
    response = api(body)
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"], response.json()
    assert status_of(batch) == "queued"


def test_a_filter_matching_more_than_the_limit_is_refused(api, alice, monkeypatch):
    monkeypatch.setattr("jobs.services.bulk.BULK_MAX_BATCHES", 1)
    queued(alice), queued(alice)
    response = api({"action": "pause", "filter": {}})
    assert response.status_code == 422
    assert "more than 1 batches" in response.json()["errors"]["filter"][0]
    assert Batch.objects.filter(status="paused").count() == 0


# --- the History page ------------------------------------------------------------------------------


@pytest.fixture
def alice_page(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_history_has_a_checkbox_per_batch_and_the_bulk_buttons(alice_page, alice):
    batch = queued(alice)
    page = alice_page.get("/batches/", {"q": "night"}).content.decode()
    assert f'name="ids" value="{batch.pk}" form="bulk-form"' in page
    assert 'name="all_matching"' in page
    assert 'name="q" value="night"' in page  # the filter travels with "select all matching"
    assert 'value="retry_failed"' in page


def test_the_bulk_form_pauses_the_ticked_batches_and_says_what_it_did(alice_page, alice, bob):
    mine, untouched, bobs = queued(alice), queued(alice), queued(bob)
    response = alice_page.post(
        "/batches/bulk/", {"action": "pause", "ids": [str(mine.pk), str(bobs.pk)], "q": "night"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/batches/?q=night"
    page = response.content.decode()
    assert "Pause: 1 batch changed, 1 skipped" in page and "not found" in page
    assert (status_of(mine), status_of(untouched), status_of(bobs)) == ("paused", "queued", "queued")


def test_select_all_matching_acts_on_the_filtered_history(alice_page, alice):
    nightly, weekly = queued(alice, "nightly"), queued(alice, "weekly")
    alice_page.post("/batches/bulk/", {"action": "cancel", "all_matching": "1", "q": "nightly"})
    assert (status_of(nightly), status_of(weekly)) == ("cancelled", "queued")


def test_the_bulk_form_without_a_selection_says_so(alice_page, alice):
    batch = queued(alice)
    page = alice_page.post("/batches/bulk/", {"action": "pause"}, follow=True).content.decode()
    assert "Tick at least one batch" in page
    assert status_of(batch) == "queued"


# --- the command line ------------------------------------------------------------------------------


def bulk_command(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("batch", "bulk", *args, stdout=out, stderr=io.StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def test_batch_bulk_pauses_by_short_id_and_exits_1_when_one_is_skipped(alice):
    first, second = queued(alice), queued(alice)
    services.batch_cancel(batch=second)
    code, out = bulk_command("pause", "--ids", first.short_id, str(second.pk))
    assert code == 1
    assert f"skipped {second.pk}: " in out
    assert out.strip().endswith("pause: 1 batch(es) changed, 1 skipped.")
    assert status_of(first) == "paused"


def test_batch_bulk_by_status_for_one_owner(alice, bob):
    alices, bobs = queued(alice), queued(bob)
    code, out = bulk_command("cancel", "--status", "queued", "--user", "alice", "--json")
    assert code == 0
    assert json.loads(out) == {"changed": 1, "skipped": []}
    assert (status_of(alices), status_of(bobs)) == ("cancelled", "queued")


def test_batch_bulk_without_ids_or_filters_exits_2():
    with pytest.raises(CommandError) as caught:
        call_command("batch", "bulk", "pause", stdout=io.StringIO())
    assert caught.value.returncode == 2


# --- operations of a batch ---------------------------------------------------------------------


@pytest.fixture
def failed_batch(alice):
    from tests.helpers_analytics import add_operations, make_batch

    batch = make_batch(alice)
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.PARTIAL_SUCCESS)
    add_operations(
        batch,
        [
            dict(label="a", status="failed", error="x"),
            dict(label="b", status="completed"),
            dict(label="c", status="failed", error="y"),
        ],
    )
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.PARTIAL_SUCCESS)
    batch.refresh_from_db()
    return batch


def op_statuses(batch) -> list[str]:
    return list(batch.operations.order_by("seq").values_list("status", flat=True))


def api_ops(alice, batch, body):
    _, key = tokens.token_create(user=alice, name="t")
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}").post(
        f"/api/batches/{batch.pk}/operations/bulk", json.dumps(body), content_type="application/json"
    )


def test_retry_of_the_listed_operations_skips_the_ones_that_cannot(alice, failed_batch):
    response = api_ops(alice, failed_batch, {"action": "retry", "seqs": [1, 2, 9]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["changed"] == 1
    assert [entry["seq"] for entry in body["skipped"]] == [2, 9]
    assert "completed" in body["skipped"][0]["reason"] and body["skipped"][1]["reason"] == "not found"
    assert op_statuses(failed_batch) == ["pending", "completed", "failed"]


def test_retry_of_every_failed_operation_by_status(alice, failed_batch):
    response = api_ops(alice, failed_batch, {"action": "retry", "status": "failed"})
    assert response.json() == {"changed": 2, "skipped": []}
    assert op_statuses(failed_batch) == ["pending", "completed", "pending"]


def test_another_users_batch_is_a_404_for_operations_bulk(bob, failed_batch):
    response = api_ops(bob, failed_batch, {"action": "retry", "all": True})
    assert response.status_code == 404
    assert op_statuses(failed_batch) == ["failed", "completed", "failed"]


@pytest.mark.parametrize("body", [{"action": "retry"}, {"action": "retry", "seqs": [1], "all": True}])
def test_operations_bulk_needs_exactly_one_selection(alice, failed_batch, body):
    assert api_ops(alice, failed_batch, body).status_code == 422
    assert op_statuses(failed_batch) == ["failed", "completed", "failed"]


def test_the_operations_tab_retries_all_matching_its_status_filter(alice_page, failed_batch):
    page = alice_page.get(f"/batches/{failed_batch.pk}/?tab=operations&status=failed").content.decode()
    assert f'action="/batches/{failed_batch.pk}/operations-bulk/"' in page
    response = alice_page.post(
        f"/batches/{failed_batch.pk}/operations-bulk/", {"action": "retry", "status": "failed"}, follow=True
    )
    assert "Retry: 2 operations changed" in response.content.decode()
    assert op_statuses(failed_batch) == ["pending", "completed", "pending"]
