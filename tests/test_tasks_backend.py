"""The Django Tasks backend against the django-tasks backport's public API (enqueue, get_result,
refresh, statuses, errors, attempts) with real RQ workers running the `task.call` operations;
batch_enqueue makes one batch of many calls."""

import datetime

import pytest
from django.utils import timezone
from django_tasks import TaskResultStatus, default_task_backend, task_backends
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist, TaskResultMismatch

from jobs.models import Batch
from jobs.tasks_backend import BatchsiteBackend, batch_enqueue, results_of
from tests import tasks_for_backend as tasks
from tests.conftest import wait_for
from tests.test_engine import wait_until_finished


def finished(result):
    def check():
        result.refresh()
        return result.is_finished

    wait_for(check, 60, message=f"task result {result.id}")
    return result


def test_the_configured_backend_is_batchsites():
    backend = task_backends["default"]
    assert isinstance(backend, BatchsiteBackend) and backend.supports_get_result and backend.supports_defer


def test_enqueue_makes_a_batch_of_one_task_call_operation_ready_to_run(db, redis_clean):
    result = tasks.add.enqueue(2, b=3)
    assert result.status == TaskResultStatus.READY and result.attempts == 0 and result.errors == []
    batch = Batch.objects.get()
    assert (batch.type, batch.total, batch.name, batch.owner.username) == (
        "task.call",
        1,
        "task add",
        "batchsite-tasks",
    )
    assert batch.params["function"] == "tests.tasks_for_backend.add"
    assert result.id == f"{batch.pk}.{batch.operations.get().seq}"
    fetched = tasks.add.get_result(result.id)
    assert (fetched.args, fetched.kwargs, fetched.status) == ([2], {"b": 3}, TaskResultStatus.READY)
    with pytest.raises(ValueError, match="not finished"):
        assert fetched.return_value is None
    assert not batch.owner.has_usable_password() and not batch.owner.is_active


def test_priority_maps_to_the_batch_queue_and_unknown_results_do_not_exist(db, redis_clean):
    result = tasks.shout.enqueue("hi")
    assert Batch.objects.get().priority == "high" and result.task.priority == 10
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-result")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(f"{result.id.split('.')[0]}.99")
    with pytest.raises(TaskResultMismatch):
        tasks.add.get_result(result.id)


def test_a_person_cannot_create_task_calls_through_the_api(alice):
    from tests.test_api import ApiClient

    response = ApiClient(alice).post(
        "/api/batches",
        {
            "type": "task.call",
            "name": "sneaky",
            "items": [{"label": "x", "params": {"args": [1, 2]}}],
            "params": {"function": "tests.tasks_for_backend.add"},
        },
    )
    assert response.status_code == 422 and "made by enqueuing a task" in response.content.decode()
    assert not Batch.objects.exists()
    # Nor by copying a real call's signature onto other arguments.
    signed = tasks.add.enqueue(1, 2)
    signature = Batch.objects.get().operations.get().params["signature"]
    response = ApiClient(alice).post(
        "/api/batches",
        {
            "type": "task.call",
            "name": "sneaky",
            "items": [{"label": "x", "params": {"args": [1, 3], "signature": signature}}],
            "params": {"function": "tests.tasks_for_backend.add"},
        },
    )
    assert response.status_code == 422 and Batch.objects.count() == 1 and signed.status == "READY"


def test_a_queue_the_backend_does_not_have_is_refused():
    with pytest.raises(InvalidTaskError):
        tasks.add.using(queue_name="elsewhere")


@pytest.mark.workers
def test_enqueued_tasks_run_on_real_workers_and_their_results_come_back(alice, workers):
    workers.start(1)
    added = tasks.add.enqueue(2, b=3)
    refused = tasks.refuse.enqueue("no thanks")
    later = tasks.add_later.enqueue(4, 5)
    finished(added)
    assert added.status == TaskResultStatus.SUCCESSFUL and added.return_value == 5
    assert added.attempts == 1 and added.worker_ids[0] and added.errors == []
    assert added.started_at <= added.finished_at and added.enqueued_at <= added.started_at
    finished(refused)
    assert refused.status == TaskResultStatus.FAILED
    [error] = refused.errors
    assert error.exception_class is tasks.Refused and "no thanks" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        assert refused.return_value is None
    assert finished(later).return_value == 9
    # On the batch pages like any batch.
    batch = Batch.objects.get(pk=added.id.split(".")[0])
    assert batch.status == "completed"


@pytest.mark.workers
def test_retries_are_attempts_with_their_errors_and_the_task_sees_its_context(alice, workers):
    task_backends["default"].batch_options["max_retries"] = 2
    try:
        workers.start(1)
        result = tasks.flaky.enqueue(fail_times=1)
    finally:
        task_backends["default"].batch_options.pop("max_retries")
    finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"attempt": 2, "id": result.id}
    assert result.attempts == 2 and len(result.worker_ids) == 2
    [error] = result.errors
    assert error.exception_class is ValueError and "attempt 1 fails" in error.traceback


@pytest.mark.workers
def test_run_after_waits_without_a_worker_then_runs(alice, workers):
    workers.start(1)
    when = timezone.now() + datetime.timedelta(seconds=2)
    result = tasks.add.using(run_after=when).enqueue(1, 1)
    assert tasks.add.get_result(result.id).task.run_after == when
    finished(result)
    assert result.return_value == 2 and result.attempts == 1 and result.started_at >= when


@pytest.mark.workers
def test_batch_enqueue_makes_one_batch_of_many_calls(alice, workers):
    workers.start(1)
    batch = batch_enqueue(tasks.add, [(1, 2), {"a": 10, "b": 5}, 7], max_parallel=2, name="sums")
    assert (batch.name, batch.total, batch.max_parallel, batch.type) == ("sums", 3, 2, "task.call")
    wait_until_finished(batch)
    assert batch.status == "completed"
    results = results_of(batch)
    assert [r.return_value for r in results] == [3, 15, 7]
    assert all(r.status == TaskResultStatus.SUCCESSFUL for r in results)
    assert tasks.add.get_result(results[1].id).kwargs == {"a": 10, "b": 5}


def test_the_task_call_type_is_not_offered_on_the_new_batch_page(alice):
    from django.test import Client

    client = Client()
    client.force_login(alice)
    page = client.get("/batches/new/").content.decode()
    assert "/batches/new/demo.sleep/" in page and "/batches/new/task.call/" not in page
