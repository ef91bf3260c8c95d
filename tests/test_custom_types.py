"""A project's own operation types (README, "Your own operation types"): registered from outside
the app, listed by the API, run end to end by real workers; and the engine's Reschedule as such a
type uses it."""

import django_rq
import pytest
from django.core.exceptions import ImproperlyConfigured

import tests.custom_optypes  # noqa: F401  (registers the example types in this process)
from jobs import services
from jobs.engine.lane import Lane
from jobs.models import Batch, Operation, ResultRow
from jobs.optypes import load_configured_types
from tests.invariants import assert_counters_match_rows
from tests.test_api import ApiClient
from tests.test_engine import wait_until_finished


def test_a_registered_type_is_listed_by_the_api_with_its_form(alice):
    greet = next(t for t in ApiClient(alice).get("/api/operation-types").json() if t["key"] == "example.greet")
    assert (greet["label"], greet["items_help"]) == ("Example: greet", "One name per line.")
    assert [(p["name"], p["type"], p["default"]) for p in greet["params"]] == [
        ("greeting", "string", "Hello"),
        ("shout", "boolean", False),
    ]


def test_a_module_that_cannot_be_imported_stops_start_up_with_its_name():
    with pytest.raises(ImproperlyConfigured, match="BATCHSITE_OPERATION_TYPES names 'tests.no_such_types'"):
        load_configured_types(["tests.no_such_types"])


@pytest.mark.workers
def test_a_project_type_runs_end_to_end_on_real_workers(alice, workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.custom_optypes"
    workers.start(1)
    api = ApiClient(alice)
    response = api.post(
        "/api/batches",
        {
            "type": "example.greet",
            "name": "greetings",
            "items": ["Ada", {"label": "Linus", "params": {"greeting": "Hi"}}, "nobody"],
            "params": {"shout": True},
            "max_retries": 2,
        },
    )
    assert response.status_code == 201, response.content
    batch = Batch.objects.get(pk=response.json()["id"])
    wait_until_finished(batch)
    assert batch.status == "partial_success"
    operations = {op.label: op for op in batch.operations.all()}
    assert operations["Ada"].result == {"text": "HELLO, ADA!"}
    assert operations["Linus"].result == {"text": "HI, LINUS!"}
    nobody = operations["nobody"]
    assert (nobody.status, nobody.error_type, nobody.error, nobody.attempts) == (
        "failed",
        "NoName",
        "Nobody to greet.",
        1,
    )
    rows = api.get(f"/api/batches/{batch.pk}/results").json()
    assert sorted((row["operation"], row["text"]) for row in rows["items"]) == [
        ("Ada", "HELLO, ADA!"),
        ("Linus", "HI, LINUS!"),
    ]
    assert_counters_match_rows(batch)


@pytest.mark.workers
def test_a_rescheduling_project_type_runs_on_real_workers(alice, workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.custom_optypes"
    workers.start(1)
    batch = services.batch_create(
        owner=alice, type="example.countdown", name="countdown", items=["a", "b"], params={"runs": 3, "wait_s": 0.2}
    )
    wait_until_finished(batch)
    assert batch.status == "completed"
    assert [op.result for op in batch.operations.all()] == [{"seen": [1, 2, 3]}] * 2
    assert_counters_match_rows(batch)


# --- Reschedule in a lane, in this process ------------------------------------------------------------


def run_lane(batch) -> str:
    return Lane(str(batch.pk), "lane-in-test").run()


def test_a_lane_runs_an_operation_again_with_the_state_it_saved(transactional_db, alice, redis_clean):
    batch = services.batch_create(owner=alice, type="example.countdown", name="c", items=["a"], params={"runs": 3})
    run_lane(batch)
    operation = Operation.objects.get(batch=batch)
    # Each run was its own attempt; the state of the one before reached it.
    assert (operation.status, operation.attempts, operation.auto_retries) == ("completed", 3, 0)
    assert operation.result == {"seen": [1, 2, 3]} and operation.state == {"seen": [1, 2]}
    batch.refresh_from_db()
    assert (batch.status, batch.duration_count) == ("completed", 1)
    assert_counters_match_rows(batch)


def test_a_lane_leaves_a_waiting_operation_pending_and_schedules_its_successor(transactional_db, alice, redis_clean):
    batch = services.batch_create(
        owner=alice, type="example.countdown", name="c", items=["a"], params={"runs": 2, "wait_s": 30}
    )
    queue = django_rq.get_queue("default")
    waiting = queue.count
    assert run_lane(batch) == "not_due"
    operation = Operation.objects.get(batch=batch)
    assert (operation.status, operation.state) == ("pending", {"seen": [1]})
    # A lane for a worker's executor, which holds it until the wait ends; no RQ scheduler involved.
    assert queue.count == waiting + 1 and queue.scheduled_job_registry.get_job_ids() == []
    batch.refresh_from_db()
    assert (batch.pending, batch.running) == (1, 0)


def test_a_state_that_is_not_json_fails_the_operation_clearly(transactional_db, alice, redis_clean):
    batch = services.batch_create(owner=alice, type="example.bad_state", name="b", items=["a"], max_retries=3)
    run_lane(batch)
    operation = Operation.objects.get(batch=batch)
    assert (operation.status, operation.error_type, operation.attempts) == ("failed", "BadResult", 1)
    assert operation.error.startswith("Reschedule state is not JSON-serialisable")
    assert ResultRow.objects.count() == 0


def test_the_old_import_path_of_the_type_exceptions_works_with_a_deprecation_warning():
    from jobs.optypes import base

    with pytest.warns(DeprecationWarning, match="jobs.optypes.base.Reschedule"):
        from jobs.engine import Reschedule
    assert Reschedule is base.Reschedule
