"""Named limits: held across two real workers (concurrency and rate), managed by the API and CLI."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

import tests.engine_three_optypes  # noqa: F401  (registers the types in this process)
from jobs import services
from jobs.errors import InvalidInput
from jobs.models import Batch, Limit
from jobs.services import limits
from tests.invariants import assert_counters_match_rows
from tests.test_api import ApiClient
from tests.test_engine import wait_until_finished


def spans(batch: Batch) -> list[tuple[float, float]]:
    return sorted((op.result["start"], op.result["end"]) for op in batch.operations.all())


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.workers
def test_a_concurrency_limit_of_two_holds_across_two_workers_and_batches(alice, workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.engine_three_optypes"
    Limit.objects.create(key="api:billing", concurrency=2)
    workers.start(2)
    batches = [
        services.batch_create(
            owner=alice,
            type="example.span",
            name=f"billing {n}",
            items=[f"call-{n}-{i}" for i in range(8)],
            params={"sleep_s": 0.2},
            max_parallel=8,
            limit_keys=["api:billing"],
        )
        for n in range(2)
    ]
    for batch in batches:
        wait_until_finished(batch)
        assert batch.status == "completed"
        assert_counters_match_rows(batch)
    every = [interval for batch in batches for interval in spans(batch)]
    assert most_at_once(every) == 2
    # Waiting for the limit spent no attempt.
    assert {op.attempts for batch in batches for op in batch.operations.all()} == {1}


@pytest.mark.workers
def test_a_rate_limit_holds_across_two_workers(alice, workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.engine_three_optypes"
    Limit.objects.create(key="api:slow", rate=4, per="second")
    workers.start(2)
    batch = services.batch_create(
        owner=alice,
        type="example.span",
        name="rated",
        items=[f"call-{i}" for i in range(14)],
        params={"sleep_s": 0},
        max_parallel=8,
        limit_keys=["api:slow"],
    )
    wait_until_finished(batch)
    assert batch.status == "completed"
    starts = [start for start, _ in spans(batch)]
    # Any 5 starts span at least the window (less the moment between a start's admission and its
    # own clock reading), so no window of 1 s holds more than 4.
    gaps = [later - earlier for earlier, later in zip(starts, starts[4:], strict=False)]
    assert min(gaps) >= 0.95, gaps


def test_limit_keys_of_an_operation_come_from_its_type_its_batch_and_its_instance():
    from jobs.optypes import get_type

    http_type = get_type("pipeline.http")
    keys = limits.operation_keys(http_type, ["api:billing"], {"url": "https://api.example.com/run/{label}"}, "")
    assert keys == "\napi:billing\nhost:api.example.com\n"
    templated = limits.operation_keys(http_type, [], {"url": "https://{host}/run"}, "db1")
    assert templated == "\ninstance:db1\n"


def test_limits_are_managed_through_the_api(staff, alice):
    api, viewer = ApiClient(staff), ApiClient(alice)
    created = api.post("/api/limits", {"key": "api:billing", "rate": 50, "per": "minute"})
    assert created.status_code == 201, created.content
    assert created.json()["description"] == "50/min"
    assert viewer.post("/api/limits", {"key": "x:y", "rate": 1}).status_code == 403
    bad = api.post("/api/limits", {"key": "has space", "rate": 0, "per": "week"})
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) >= {"key"}
    bad = api.post("/api/limits", {"key": "ok:key", "rate": 0, "per": "week"})
    assert set(bad.json()["errors"]) == {"rate", "per"}
    changed = api.client.put(
        "/api/limits/api:billing", json.dumps({"concurrency": 3}), content_type="application/json", **api.headers
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["concurrency"], changed.json()["rate"]) == (3, 50)
    listed = viewer.get("/api/limits").json()
    assert [row["key"] for row in listed["items"]] == ["api:billing"]
    assert api.delete("/api/limits/api:billing").status_code == 204
    assert api.delete("/api/limits/api:billing").status_code == 404
    bad = api.post("/api/batches", {"type": "noop", "name": "n", "items": ["a"], "limit_keys": ["bad key"]})
    assert bad.status_code == 422, bad.content
    assert "no spaces" in bad.json()["errors"]["limit_keys[0]"][0]


def run_batch_command(*args: str) -> str:
    out = io.StringIO()
    call_command("batch", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_limits_are_managed_from_the_command_line(db, staff):
    assert "Limit api:billing: 50/min." in run_batch_command("limits", "set", "api:billing", "--rate", "50")
    out = run_batch_command("limits", "set", "api:billing", "--concurrency", "2")
    assert "Limit api:billing: 2 at once, 50/min." in out
    listed = run_batch_command("limits", "list")
    assert "api:billing" in listed and "50/minute" in listed
    assert json.loads(run_batch_command("limits", "list", "--json"))["count"] == 1
    with pytest.raises(CommandError) as caught:
        run_batch_command("limits", "set", "bad key", "--rate", "5")
    assert caught.value.returncode == 2 and "no spaces" in str(caught.value)
    with pytest.raises(CommandError) as caught:
        run_batch_command("limits", "set", "x:y", "--rate", "-3")
    assert caught.value.returncode == 2 and "rate" in str(caught.value)
    assert "Removed limit api:billing." in run_batch_command("limits", "remove", "api:billing")
    with pytest.raises(CommandError) as caught:
        run_batch_command("limits", "remove", "api:billing")
    assert caught.value.returncode == 2
    out = run_batch_command("create", "--type", "noop", "--item", "a", "--limit-key", "api:billing", "--user", "sam")
    assert Batch.objects.get().limit_keys == ["api:billing"]
    assert "Created batch" in out
    with pytest.raises(CommandError) as caught:
        run_batch_command("create", "--type", "noop", "--item", "a", "--limit-key", "bad key", "--user", "sam")
    assert caught.value.returncode == 2 and "limit_keys" in str(caught.value)


def test_an_instance_limit_is_its_max_connections(db, staff):
    from jobs.models import DatabaseInstance

    services.instance_create(name="db1", url="sqlite:////tmp/x.sqlite3", shared=True)
    row = services.limit_set(key="instance:db1", values={"concurrency": 3, "rate": 10, "per": "second"})
    assert (row["concurrency"], row["rate"], row["source"]) == (3, 10, "instance")
    assert DatabaseInstance.objects.get(name="db1").max_connections == 3
    assert not Limit.objects.get(key="instance:db1").concurrency  # the instance holds it
    with pytest.raises(InvalidInput) as caught:
        services.limit_set(key="instance:nope", values={"concurrency": 1})
    assert set(caught.value.errors) == {"key"}


def test_the_limits_page_lists_them_and_staff_manage_them(db, staff, alice):
    from django.test import Client

    admin, viewer = Client(), Client()
    admin.force_login(staff)
    viewer.force_login(alice)
    response = admin.post("/limits/", {"key": "api:billing", "rate": "50", "per": "minute"})
    assert response.status_code == 302
    page = viewer.get("/limits/")
    assert b"api:billing" in page.content and b"50 per minute" in page.content
    assert b"Add or change a limit" not in page.content
    assert viewer.post("/limits/", {"key": "x:y", "rate": "1", "per": "minute"}).status_code == 403
    bad = admin.post("/limits/", {"key": "no good", "per": "minute"})
    assert bad.status_code == 422 and b"no spaces" in bad.content
    empty = admin.post("/limits/", {"key": "x:y", "per": "minute"})
    assert empty.status_code == 422 and b"Give a concurrency, a rate, or both." in empty.content
    assert admin.post("/limits/api:billing/remove/").status_code == 302
    assert not Limit.objects.exists()


def test_a_batch_waiting_for_a_limit_says_so_on_its_page(db, alice):
    from django.test import Client

    batch = services.batch_create(owner=alice, type="noop", name="w", items=["a"], limit_keys=["api:billing"])
    Batch.objects.filter(pk=batch.pk).update(waiting_for="api:billing: 50/min", status="running")
    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/batches/{batch.pk}/")
    assert b"Waiting for api:billing: 50/min" in page.content
