"""A Django Tasks backend (the django-tasks backport of Django 6.0's `django.tasks`) that runs
tasks as Batchsite operations:

    TASKS = {"default": {"BACKEND": "jobs.tasks_backend.BatchsiteBackend",
                         "OPTIONS": {"OWNER": "tasks", "max_retries": 2}}}

`my_task.enqueue(...)` creates a batch of one `task.call` operation, which a worker runs (the
batch's page, retries and timeline as for any batch); `batch_enqueue(my_task, [...])` makes one
batch of many calls. A result's id is `<batch id>.<seq>`; `get_result` reads the operation.
"""

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task, TaskError, TaskResult, TaskResultStatus
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.utils import normalize_json

from jobs import services
from jobs.models import AttemptOutcome, Batch, Operation, OperationStatus, Priority
from jobs.optypes import task_call
from jobs.selectors.operations import operation_attempts

DEFAULT_OWNER = "batchsite-tasks"
# Attempts that ran the function to an end; a wait for run_after or a hand-back is no attempt.
COUNTED_OUTCOMES = {AttemptOutcome.COMPLETED, AttemptOutcome.FAILED, AttemptOutcome.LOST, "running"}
FAILED_OUTCOMES = {AttemptOutcome.FAILED, AttemptOutcome.LOST}
STATUSES = {
    OperationStatus.PENDING: TaskResultStatus.READY,
    OperationStatus.RUNNING: TaskResultStatus.RUNNING,
    OperationStatus.COMPLETED: TaskResultStatus.SUCCESSFUL,
    OperationStatus.FAILED: TaskResultStatus.FAILED,
    # Cancelled with its batch, or never run after a stop-on-error: it will not run.
    OperationStatus.SKIPPED: TaskResultStatus.FAILED,
}


def _batch_priority(priority: int) -> str:
    """Tasks' -100..100 onto the three worker queues."""
    if priority > 0:
        return Priority.HIGH
    if priority < 0:
        return Priority.LOW
    return Priority.DEFAULT


def _call_params(task: Task, args: Iterable[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    values: list[Any] = normalize_json(list(args))
    names: dict[str, Any] = normalize_json(dict(kwargs))
    return {"args": values, "kwargs": names, "signature": task_call.call_signature(task.module_path, values, names)}


def _task_params(task: Task) -> dict[str, Any]:
    return {
        "function": task.module_path,
        "backend": task.backend,
        "priority": task.priority,
        "queue_name": task.queue_name,
        **({"run_after": task.run_after.isoformat()} if task.run_after else {}),
    }


class BatchsiteBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        options = dict(self.options)
        self.owner_name = options.pop("OWNER", DEFAULT_OWNER)
        # The rest are batch options (max_retries, timeout_s, max_parallel...), as batch_create takes them.
        self.batch_options = {key.lower(): value for key, value in options.items()}

    def owner(self):
        """The user whose batches tasks make (created on first use, unable to sign in)."""
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            **{user_model.USERNAME_FIELD: self.owner_name}, defaults={"is_active": False}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return user

    def create_batch(self, task: Task, calls: list[dict[str, Any]], name: str, **batch_options: Any) -> Batch:
        self.validate_task(task)
        options = {"priority": _batch_priority(task.priority), **self.batch_options, **batch_options}
        with transaction.atomic():
            return services.batch_create(
                owner=self.owner(),
                type=task_call.KEY,
                name=name,
                items=[{"label": task.name, "params": call} for call in calls],
                params=_task_params(task),
                # The code's own enqueues, not a person's clicks.
                rate_limit=False,
                **options,
            )

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        batch = self.create_batch(task, [_call_params(task, args, kwargs)], name=f"task {task.name}")
        operation = batch.operations.get()
        return self._result(batch, operation, task)

    def get_result(self, result_id: str) -> TaskResult:
        batch_id, _, seq = str(result_id).rpartition(".")
        try:
            operation = Operation.objects.select_related("batch").get(
                batch_id=uuid.UUID(batch_id), seq=int(seq), batch__type=task_call.KEY
            )
        except (Operation.DoesNotExist, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        params = {**operation.batch.params, **operation.params}
        try:
            task = task_call.task_of(params["function"])
        except Exception as exc:
            raise TaskResultDoesNotExist(f"{result_id}: {exc}") from None
        run_after = parse_datetime(params["run_after"]) if params.get("run_after") else None
        task = task.using(priority=params.get("priority"), queue_name=params.get("queue_name"), run_after=run_after)
        return self._result(operation.batch, operation, task)

    def _result(self, batch: Batch, operation: Operation, task: Task) -> TaskResult:
        params = {**batch.params, **operation.params}
        attempts = [
            attempt
            for attempt in operation_attempts(operation, with_traceback=True)
            if attempt["outcome"] in COUNTED_OUTCOMES
        ]
        errors = [
            TaskError(
                exception_class_path=task_call.exception_path_of(attempt["error_type"]),
                traceback=attempt["traceback"] or attempt["error"],
            )
            for attempt in attempts
            if attempt["outcome"] in FAILED_OUTCOMES
        ]
        started: list[datetime] = [a["started_at"] for a in attempts if a["started_at"] is not None]
        status = STATUSES[OperationStatus(operation.status)]
        result: TaskResult = TaskResult(
            task=task,
            id=f"{batch.pk}.{operation.seq}",
            status=status,
            enqueued_at=batch.created_at,
            started_at=started[0] if started else None,
            last_attempted_at=started[-1] if started else None,
            finished_at=operation.finished_at
            if status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
            else None,
            args=params.get("args", []),
            kwargs=params.get("kwargs", {}),
            backend=self.alias,
            errors=errors,
            worker_ids=[attempt["worker"] for attempt in attempts],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", (operation.result or {}).get("return_value"))
        return result


def batch_enqueue(task: Task, args_list: Iterable[Any], **batch_options: Any) -> Batch:
    """Enqueue one call of `task` per element of `args_list` as one batch (its page, analytics,
    retries and options such as `max_parallel`); returns the batch. An element is a list or tuple
    of positional arguments, a dict of keyword arguments, or a single argument. Each call's
    result is `task.get_result(f"{batch.pk}.{seq}")` (see `results_of`)."""
    backend = task.get_backend()
    if not isinstance(backend, BatchsiteBackend):
        raise InvalidTaskError(f"batch_enqueue needs a task of a BatchsiteBackend, not {type(backend).__name__}.")
    calls = []
    for element in args_list:
        if isinstance(element, list | tuple):
            calls.append(_call_params(task, element, {}))
        elif isinstance(element, dict):
            calls.append(_call_params(task, [], element))
        else:
            calls.append(_call_params(task, [element], {}))
    name = batch_options.pop("name", f"{task.name} ×{len(calls)} {timezone.localtime():%Y-%m-%d %H:%M}")
    return backend.create_batch(task, calls, name=name, **batch_options)


def results_of(batch: Batch) -> list[TaskResult]:
    """The TaskResult of every call in a batch made by batch_enqueue, in order."""
    backend_alias = batch.params.get("backend", "default")
    from django_tasks import task_backends

    backend = task_backends[backend_alias]
    return [backend.get_result(f"{batch.pk}.{seq}") for seq in batch.operations.values_list("seq", flat=True)]
