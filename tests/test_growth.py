"""Batches that grow, chain and expire, without workers: the services step by step with
claims and outcomes as the engine reports them, and every front (API, pages, command, admin).
The counters are checked after every step; tests/test_growth_engine.py runs it all on real
workers."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from jobs import services
from jobs.engine import reaper
from jobs.errors import IllegalTransition, InvalidInput, TooManyOperations, UnknownReference
from jobs.models import Batch, BatchEvent, Operation
from jobs.notifications.services import _event_name
from tests.invariants import assert_counters_match_rows


def make_batch(owner, items=("a", "b", "c"), **options) -> Batch:
    options.setdefault("type", "demo.sleep")
    options.setdefault("name", "test batch")
    return services.batch_create(owner=owner, items=list(items), **options)


def claim(batch: Batch, limit: int = 1) -> list[services.Claim]:
    claims = services.operations_claim(batch_id=str(batch.pk), worker="test", limit=limit)
    assert isinstance(claims, list), claims
    return claims


def report(*claims: services.Claim, kind: str = "completed") -> list[bool]:
    outcomes = [services.Outcome(c, kind, 5, error="boom" if kind == "failed" else "") for c in claims]
    return services.operations_record(batch_id=claims[0].batch_id, outcomes=outcomes).accepted


def fresh(batch: Batch) -> Batch:
    batch.refresh_from_db()
    assert_counters_match_rows(batch)
    return batch


def kinds(batch: Batch) -> list[str]:
    return list(batch.events.values_list("kind", flat=True))


# --- adding operations ------------------------------------------------------------------------


def test_added_operations_follow_the_last_seq_and_grow_the_totals(alice):
    batch = make_batch(alice, items=["a", "b"], params={"duration_ms": 5}, max_parallel=1)
    report(*claim(batch))
    services.batch_add_operations(
        batch_id=batch.pk, items=["c", {"label": "d", "params": {"duration_ms": 7}}], by=alice
    )
    batch = fresh(batch)
    assert (batch.total, batch.pending, batch.completed, batch.percent_complete) == (4, 3, 1, 25)
    assert list(batch.operations.values_list("seq", "label", "params")) == [
        (1, "a", {}),
        (2, "b", {}),
        (3, "c", {}),
        (4, "d", {"duration_ms": 7}),
    ]
    extended = batch.events.get(kind="extended")
    assert (extended.actor, extended.message) == (alice, "2 operation(s) added")
    for _ in range(3):
        report(*claim(batch))
    assert fresh(batch).status == "completed" and batch.completed == 4


def test_a_finished_batch_reopens_only_when_asked(alice):
    batch = make_batch(alice, items=["a"])
    report(*claim(batch))
    assert fresh(batch).status == "completed" and batch.finished_at
    with pytest.raises(IllegalTransition, match="without reopen"):
        services.batch_add_operations(batch_id=batch.pk, items=["b"])
    assert fresh(batch).total == 1
    services.batch_add_operations(batch_id=batch.pk, items=["b"], by=alice, reopen=True)
    batch = fresh(batch)
    assert (batch.status, batch.finished_at, batch.total, batch.pending) == ("running", None, 2, 1)
    assert "reopened (was completed)" in batch.events.get(kind="extended").message
    report(*claim(batch))
    batch = fresh(batch)
    assert batch.status == "completed" and batch.events.filter(kind="finished").count() == 2


@override_settings(BATCH_MAX_OPERATIONS=4)
def test_adding_beyond_the_limit_adds_nothing(alice):
    batch = make_batch(alice, items=["a", "b", "c"])
    with pytest.raises(TooManyOperations):
        services.batch_add_operations(batch_id=batch.pk, items=["d", "e"])
    assert fresh(batch).total == 3 and not batch.events.filter(kind="extended").exists()
    services.batch_add_operations(batch_id=batch.pk, items=["d"])
    assert fresh(batch).total == 4


def test_added_items_are_validated_by_the_type_and_nothing_is_written(alice):
    batch = make_batch(alice, items=["a"])
    with pytest.raises(InvalidInput) as caught:
        services.batch_add_operations(batch_id=batch.pk, items=["ok", {"label": "x", "params": {"duration_ms": "no"}}])
    assert "items[1].params.duration_ms" in caught.value.errors
    assert fresh(batch).total == 1


def test_a_draining_or_deleted_batch_takes_no_operations(alice):
    batch = make_batch(alice, items=["a", "b"])
    claim(batch)
    services.batch_cancel(batch=batch, mode="drain")
    with pytest.raises(IllegalTransition):
        services.batch_add_operations(batch_id=batch.pk, items=["c"], reopen=True)
    gone = make_batch(alice, items=["a"])
    services.batch_cancel(batch=gone)
    services.batch_delete(batch=gone)
    with pytest.raises(Batch.DoesNotExist):
        services.batch_add_operations(batch_id=gone.pk, items=["c"])


# --- chains -----------------------------------------------------------------------------------


def test_a_chain_of_three_stops_where_the_middle_one_fails(alice):
    first, middle, last = services.chain_create(
        owner=alice,
        bodies=[
            {"type": "demo.sleep", "name": "extract", "items": ["a"]},
            {"type": "demo.sleep", "name": "transform", "items": ["b"]},
            {"type": "demo.sleep", "name": "load", "items": ["c"]},
        ],
    )
    assert [fresh(b).status for b in (first, middle, last)] == ["queued", "waiting", "waiting"]
    assert (middle.after_id, last.after_id) == (first.pk, middle.pk)
    report(*claim(first))
    assert [fresh(b).status for b in (first, middle, last)] == ["completed", "queued", "waiting"]
    assert "extract" in middle.events.get(kind="unblocked").message
    report(*claim(middle), kind="failed")
    last = fresh(last)
    assert (fresh(middle).status, last.status, last.skipped) == ("failed", "cancelled", 1)
    assert last.finished_at and "transform" in last.cancel_reason and "ended failed" in last.cancel_reason
    assert kinds(last) == ["created", "cancelled"]


def test_the_failed_condition_starts_after_a_failure_and_is_cancelled_after_a_success(alice):
    broken, ok = make_batch(alice, items=["a"]), make_batch(alice, items=["a"])
    on_failure = make_batch(alice, items=["x"], after=broken.pk, after_condition="failed")
    not_needed = make_batch(alice, items=["x"], after=ok.pk, after_condition="failed")
    anyway = make_batch(alice, items=["x"], after=ok.pk, after_condition="finished")
    report(*claim(broken), kind="failed")
    report(*claim(ok))
    assert fresh(on_failure).status == "queued"
    assert fresh(not_needed).status == "cancelled" and "ended completed" in not_needed.cancel_reason
    assert fresh(anyway).status == "queued"


def test_a_batch_after_one_that_already_ended_starts_or_is_cancelled_at_once(alice):
    done = make_batch(alice, items=["a"])
    report(*claim(done))
    assert make_batch(alice, after=str(done.pk)).status == "queued"
    cancelled = make_batch(alice, after=done.pk, after_condition="failed")
    assert fresh(cancelled).status == "cancelled"


def test_cancelling_or_deleting_the_predecessor_cancels_the_waiting_batch(alice):
    first = make_batch(alice, items=["a"])
    second = make_batch(alice, after=first.pk)
    services.batch_cancel(batch=first, by=alice)
    assert fresh(second).status == "cancelled" and "ended cancelled" in second.cancel_reason
    other = make_batch(alice, items=["a"], start=False)
    waiting = make_batch(alice, after=other.pk)
    services.batch_delete(batch=other)
    assert fresh(waiting).status == "cancelled" and "deleted" in waiting.cancel_reason


def test_after_must_be_your_own_batch_and_a_chain_refuses_a_second_after(alice, bob):
    mine = make_batch(alice)
    with pytest.raises(UnknownReference) as caught:
        make_batch(bob, after=mine.pk)
    assert caught.value.errors == {"after": ["No such batch."]}
    with pytest.raises(UnknownReference):
        make_batch(alice, after="not-a-uuid")
    with pytest.raises(InvalidInput) as caught:
        make_batch(alice, after=mine.pk, after_condition="sometimes")
    assert "after_condition" in caught.value.errors
    with pytest.raises(InvalidInput) as caught:
        services.chain_create(
            owner=alice,
            bodies=[
                {"type": "noop", "name": "one", "items": ["a"]},
                {"type": "noop", "name": "two", "items": ["a"], "after": str(mine.pk)},
            ],
        )
    assert "batches[1].after" in caught.value.errors
    assert Batch.objects.filter(owner=bob).count() == 0 and Batch.objects.count() == 1


def test_a_chain_is_created_whole_or_not_at_all(alice):
    with pytest.raises(InvalidInput) as caught:
        services.chain_create(
            owner=alice,
            bodies=[
                {"type": "noop", "name": "one", "items": ["a"]},
                {"type": "noop", "name": "two", "items": ["a"], "deadline_s": 0},
            ],
        )
    assert "batches[1].deadline_s" in caught.value.errors
    assert Batch.objects.count() == Operation.objects.count() == 0


# --- deadlines --------------------------------------------------------------------------------


def test_a_deadline_counts_from_the_start_and_refuses_zero(alice):
    with pytest.raises(InvalidInput) as caught:
        make_batch(alice, deadline_s=0)
    assert "deadline_s" in caught.value.errors
    before = timezone.now()
    batch = make_batch(alice, deadline_s=60)
    assert before + timedelta(seconds=59) <= batch.deadline_at <= timezone.now() + timedelta(seconds=60)
    first = make_batch(alice, items=["a"])
    waiting = make_batch(alice, after=first.pk, deadline_s=60)
    assert fresh(waiting).deadline_at is None, "a waiting batch's deadline starts when it starts"


def test_an_expired_batch_keeps_what_finished_and_stops_the_rest(alice):
    batch = make_batch(alice, items=["a", "b", "c", "d"], deadline_s=30, max_parallel=2)
    done, running = claim(batch, limit=2)
    report(done)
    Batch.objects.filter(pk=batch.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert "1 batches expired" in str(reaper.reap())
    batch = fresh(batch)
    assert (batch.status, batch.completed, batch.skipped, batch.pending, batch.running) == ("expired", 1, 3, 0, 0)
    assert batch.operations.get(seq=1).status == "completed"
    assert batch.operations.get(pk=running.operation_id).error_type == "Expired"
    assert report(running) == [False], "a stopped operation's late outcome is fenced out"
    event = batch.events.get(kind="expired")
    assert "1 completed, 0 failed, 3 skipped" in event.message
    assert _event_name(event) == "expired", "notified like the other ends"
    assert fresh(batch).completed == 1


def test_a_claim_past_the_deadline_expires_the_batch_without_claiming(alice):
    batch = make_batch(alice, items=["a", "b"], deadline_s=30)
    Batch.objects.filter(pk=batch.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    result = services.operations_claim(batch_id=str(batch.pk), worker="test", limit=2)
    assert result == services.NoClaim("inactive")
    assert fresh(batch).status == "expired" and batch.skipped == 2


def test_an_expired_batch_starts_the_batches_waiting_for_any_end(alice):
    batch = make_batch(alice, items=["a"], deadline_s=30)
    after_any = make_batch(alice, after=batch.pk, after_condition="finished")
    after_success = make_batch(alice, after=batch.pk)
    Batch.objects.filter(pk=batch.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert services.batches_expire_due() == 1
    assert (fresh(after_any).status, fresh(after_success).status) == ("queued", "cancelled")


# --- graceful cancel --------------------------------------------------------------------------


def test_a_drain_lets_running_operations_finish_and_count(alice):
    batch = make_batch(alice, items=["a", "b", "c", "d", "e"], max_parallel=3, max_retries=2)
    ok, bad, late = claim(batch, limit=3)
    services.batch_cancel(batch=batch, by=alice, mode="drain", reason="enough")
    batch = fresh(batch)
    assert (batch.status, batch.running, batch.skipped, batch.finished_at) == ("cancelling", 3, 2, None)
    assert services.operations_claim(batch_id=str(batch.pk), worker="test", limit=1) == services.NoClaim("inactive")
    report(ok)
    report(bad, kind="failed")  # retries left, but a draining batch starts nothing new
    assert fresh(batch).status == "cancelling"
    report(late)
    batch = fresh(batch)
    assert (batch.status, batch.completed, batch.failed, batch.skipped) == ("cancelled", 2, 1, 2)
    assert batch.finished_at and batch.cancelled_by == alice and batch.cancel_reason == "enough"
    assert kinds(batch) == ["created", "started", "cancelling", "operation_failed_final", "cancelled"]
    assert batch.events.get(kind="cancelling").actor == alice


def test_cancel_now_escalates_a_drain_and_a_drain_with_nothing_running_ends_at_once(alice):
    batch = make_batch(alice, items=["a", "b"])
    (running,) = claim(batch)
    services.batch_cancel(batch=batch, mode="drain")
    with pytest.raises(IllegalTransition):
        services.batch_cancel(batch=batch, mode="drain")
    services.batch_cancel(batch=batch, mode="now")
    batch = fresh(batch)
    assert (batch.status, batch.skipped) == ("cancelled", 2)
    assert report(running) == [False]
    idle = make_batch(alice)
    assert services.batch_cancel(batch=idle, mode="drain").status == "cancelled"
    with pytest.raises(InvalidInput):
        services.batch_cancel(batch=make_batch(alice), mode="later")


def test_the_reaper_ends_a_drain_whose_last_operation_was_lost(alice):
    batch = make_batch(alice, items=["a", "b"])
    (lost,) = claim(batch)
    services.batch_cancel(batch=batch, mode="drain")
    Operation.objects.filter(pk=lost.operation_id).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    reaper.reap()
    batch = fresh(batch)
    assert (batch.status, batch.skipped) == ("cancelled", 2)


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def api(client, alice):
    client.force_login(alice)
    return client


def post(client, url: str, body: dict | None = None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def test_the_api_adds_operations_with_the_documented_answers(api, alice, bob):
    batch = make_batch(alice, items=["a"])
    response = post(api, f"/api/batches/{batch.pk}/operations", {"items": ["b", "c"]})
    assert response.status_code == 201 and response.json()["total"] == 3
    report(*claim(batch, limit=3))
    assert post(api, f"/api/batches/{batch.pk}/operations", {"items": ["d"]}).status_code == 409
    reopened = post(api, f"/api/batches/{batch.pk}/operations", {"items": ["d"], "reopen": True})
    assert reopened.status_code == 201 and reopened.json()["status"] == "running"
    with override_settings(BATCH_MAX_OPERATIONS=4):
        too_many = post(api, f"/api/batches/{batch.pk}/operations", {"items": ["e"]})
    assert too_many.status_code == 413 and fresh(batch).total == 4
    assert post(api, f"/api/batches/{batch.pk}/operations", {"items": []}).status_code == 422
    bobs = make_batch(bob)
    assert post(api, f"/api/batches/{bobs.pk}/operations", {"items": ["x"]}).status_code == 404
    services.batch_cancel(batch=bobs)
    services.batch_delete(batch=bobs)
    assert post(api, f"/api/batches/{bobs.pk}/operations", {"items": ["x"]}).status_code == 404


def test_the_api_creates_chains_and_refuses_foreign_after_with_a_404(api, alice, bob):
    bobs = make_batch(bob)
    body = {"type": "noop", "name": "x", "items": ["a"], "after": str(bobs.pk)}
    refused = post(api, "/api/batches", body)
    assert refused.status_code == 404 and refused.json()["errors"] == {"after": ["No such batch."]}
    assert post(api, "/api/batches", {**body, "after": None, "deadline_s": 0}).status_code == 422
    chain = post(
        api,
        "/api/chains",
        {
            "batches": [{"type": "noop", "name": n, "items": ["a"]} for n in ("one", "two", "three")],
            "condition": "finished",
        },
    )
    assert chain.status_code == 201
    ids = chain.json()["ids"]
    assert [b["status"] for b in chain.json()["batches"]] == ["queued", "waiting", "waiting"]
    assert [b["after"] for b in chain.json()["batches"]] == [None, ids[0], ids[1]]
    assert chain.json()["batches"][1]["after_condition"] == "finished"
    cycle = post(
        api,
        "/api/chains",
        {
            "batches": [
                {"type": "noop", "name": "a", "items": ["a"]},
                {"type": "noop", "name": "b", "items": ["a"], "after": ids[0]},
            ]
        },
    )
    assert cycle.status_code == 422 and "batches[1].after" in cycle.json()["errors"]
    listed = api.get("/api/batches?status=waiting").json()
    assert listed["count"] == 2


def test_the_api_cancels_now_or_drains(api, alice):
    batch = make_batch(alice, items=["a", "b"])
    claim(batch)
    drained = post(api, f"/api/batches/{batch.pk}/cancel", {"mode": "drain"})
    assert drained.status_code == 200 and drained.json()["status"] == "cancelling"
    assert post(api, f"/api/batches/{batch.pk}/cancel", {"mode": "sideways"}).status_code == 422
    assert api.post(f"/api/batches/{batch.pk}/cancel").json()["status"] == "cancelled"


# --- pages, command, admin --------------------------------------------------------------------


def test_the_batch_page_adds_items_shows_the_chain_the_countdown_and_both_cancels(api, alice):
    first = make_batch(alice, items=["a"], name="extract", deadline_s=600)
    second = make_batch(alice, items=["b"], name="load", after=first.pk)
    claim(first)
    page = api.get(f"/batches/{first.pk}/").content.decode()
    assert ">Cancel</button>" in page and "Drain (let running ones finish)" in page
    assert 'data-deadline="' in page and "Add items" in page
    assert f'href="/batches/{second.pk}/"' in page, "the chain links to the next batch"
    waiting = api.get(f"/batches/{second.pk}/").content.decode()
    assert "Waiting for" in waiting and f'href="/batches/{first.pk}/"' in waiting
    response = api.post(f"/batches/{first.pk}/add-items/", {"items": "c\nd\n"})
    assert response.status_code == 302 and fresh(first).total == 3
    bad = api.post(f"/batches/{first.pk}/add-items/", {"items": ""})
    assert bad.status_code == 422 and "Give at least one item" in bad.content.decode()
    api.post(f"/batches/{first.pk}/drain/")
    assert fresh(first).status == "cancelling"


def test_the_create_page_makes_a_batch_wait_with_a_deadline(api, alice):
    first = make_batch(alice, items=["a"], name="first")
    form = api.get("/batches/new/noop/").content.decode()
    assert "Start after" in form and "first (" in form and "Deadline" in form
    response = api.post(
        "/batches/new/noop/",
        {
            "name": "next",
            "items": "x",
            "after": str(first.pk),
            "after_condition": "finished",
            "deadline_s": "90",
            "max_parallel": 4,
            "max_retries": 0,
            "retry_backoff_s": 1,
            "timeout_s": 300,
            "priority": "default",
        },
    )
    assert response.status_code == 302
    created = Batch.objects.get(name="next")
    assert (created.status, created.after_id, created.after_condition, created.deadline_s) == (
        "waiting",
        first.pk,
        "finished",
        90,
    )


def batch_command(*args) -> str:
    out = io.StringIO()
    call_command("batch", *[str(a) for a in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_adds_chains_waits_and_drains(alice, staff, tmp_path):
    batch = make_batch(alice, items=["a"])
    assert "Added 2 operation(s)" in batch_command("add", batch.short_id, "--item", "b", "--item", "c")
    assert fresh(batch).total == 3
    output = batch_command("create", "--type", "noop", "--item", "x", "--after", batch.short_id, "--deadline", "30")
    assert "Waiting for batch" in output
    assert Batch.objects.get(after=batch).deadline_s == 30
    claim(batch)
    assert "will finish" in batch_command("cancel", batch.short_id, "--drain")
    spec = tmp_path / "chain.json"
    spec.write_text(json.dumps([{"type": "noop", "name": n, "items": ["a"]} for n in ("one", "two")]))
    assert "Created a chain of 2 batches." in batch_command("chain", spec)
    for args in (("create", "--type", "noop", "--item", "x", "--deadline", "0"), ("add", batch.short_id)):
        with pytest.raises(CommandError) as caught:
            batch_command(*args)
        assert caught.value.returncode == 2


def test_the_admin_drains_selected_batches(admin_client, alice):
    batch = make_batch(alice, items=["a", "b"])
    claim(batch)
    admin_client.post("/admin/jobs/batch/", {"action": "drain_selected", "_selected_action": [str(batch.pk)]})
    assert fresh(batch).status == "cancelling"
    assert BatchEvent.objects.get(batch=batch, kind="cancelling").actor.username == "admin"


def test_added_operations_of_a_database_type_are_checked_and_limited_like_created_ones(alice, bob, sqlite_db):
    services.instance_create(name="shop", url=sqlite_db("shop"), max_connections=2, owner=alice)
    services.instance_create(name="bobs", url=sqlite_db("bobs"), owner=bob)
    batch = make_batch(alice, type="sql.workflow", items=["shop"], params={"query": "SELECT 1 AS n"})
    services.batch_add_operations(batch_id=batch.pk, items=["shop"], by=alice)
    assert list(fresh(batch).operations.values_list("resource", flat=True)) == ["shop", "shop"]
    assert batch.instance_limited
    with pytest.raises(InvalidInput) as caught:
        services.batch_add_operations(batch_id=batch.pk, items=["bobs"], by=alice)
    assert "items[0].label" in caught.value.errors and fresh(batch).total == 2
