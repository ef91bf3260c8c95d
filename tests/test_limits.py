"""Named limits: held across two real workers (concurrency and rate), managed by the API and CLI."""

import pytest

import tests.engine_three_optypes  # noqa: F401  (registers the types in this process)
from jobs import services
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
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) >= {"key"}
    bad = api.post("/api/limits", {"key": "ok:key", "rate": 0, "per": "week"})
    assert set(bad.json()["errors"]) == {"rate", "per"}
    changed = api.put("/api/limits/api:billing", {"concurrency": 3})
    assert changed.status_code == 200, changed.content
    assert (changed.json()["concurrency"], changed.json()["rate"]) == (3, 50)
    listed = viewer.get("/api/limits").json()
    assert [row["key"] for row in listed["items"]] == ["api:billing"]
    assert api.delete("/api/limits/api:billing").status_code == 204
    assert api.delete("/api/limits/api:billing").status_code == 404
