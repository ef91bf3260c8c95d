"""`task.call`: one operation calls a function by its module path — how Django Tasks enqueued
through jobs.tasks_backend run on Batchsite's workers (with its retries, pages and analytics)."""

import builtins
import datetime
import hashlib
import json
from typing import Annotated, Any

from django import forms
from django.core import signing
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string
from pydantic import Field

from jobs.optypes.base import OperationContextProtocol, OperationFailure, PermanentFailure, Reschedule, operation_type

KEY = "task.call"
SIGNING_SALT = "jobs.optypes.task_call"


def error_type_of(exc: BaseException) -> str:
    """What a TaskError's exception_class_path needs: a builtin's name, else its module path."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_path_of(error_type: str) -> str:
    """The inverse of error_type_of; engine-made errors (Timeout, WorkerLost) become OperationFailure."""
    if "." in error_type:
        return error_type
    found = getattr(builtins, error_type, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return f"builtins.{error_type}"
    if error_type == "Timeout":
        return "builtins.TimeoutError"
    return f"{OperationFailure.__module__}.{OperationFailure.__qualname__}"


def _call_digest(function: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    payload = json.dumps([function, args, kwargs], sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(payload.encode()).hexdigest()


def call_signature(function: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """Signed with the secret key by jobs.tasks_backend: what a person sends through the pages or
    the API cannot name a task and its arguments (they could otherwise call any task there is)."""
    return signing.Signer(salt=SIGNING_SALT).sign(_call_digest(function, args, kwargs))


def _signed(params: dict[str, Any]) -> bool:
    try:
        digest = signing.Signer(salt=SIGNING_SALT).unsign(str(params.get("signature", "")))
    except signing.BadSignature:
        return False
    expected = _call_digest(params.get("function", ""), params.get("args", []), params.get("kwargs", {}))
    return constant_time_compare(digest, expected)


def check_signed(params: dict[str, Any]) -> None:
    if not _signed(params):
        raise forms.ValidationError("task.call operations are made by enqueuing a task (jobs.tasks_backend).")


def task_of(path: str) -> Any:
    """The django-tasks Task at `path`; only those are called, never any other function a caller names."""
    from django_tasks.base import Task

    try:
        found = import_string(path)
    except ImportError as exc:
        raise PermanentFailure(f"Cannot import the task {path!r}: {exc}", "TaskNotFound") from None
    if not isinstance(found, Task):
        raise PermanentFailure(f"{path!r} is not a task (decorate it with @task).", "NotATask")
    return found


@operation_type(
    key=KEY,
    label="Django task",
    items_help="One call per item (set by jobs.tasks_backend).",
    validate_operation=check_signed,
    listed=False,
)
def run_task_call(
    ctx: OperationContextProtocol,
    function: Annotated[str, Field(min_length=1, max_length=300, description="The task's module path.")],
    args: Annotated[list[Any], Field(default_factory=list, description="Positional arguments (JSON).")],
    kwargs: Annotated[dict[str, Any], Field(default_factory=dict, description="Keyword arguments (JSON).")],
    run_after: Annotated[datetime.datetime | None, Field(description="Not run before this time.")] = None,
    backend: Annotated[str, Field(description="The TASKS alias it was enqueued with.")] = "default",
    priority: int = 0,
    queue_name: str = "default",
    signature: Annotated[str, Field(description="Set by jobs.tasks_backend.")] = "",
) -> dict:
    """Calls a Django task (django-tasks) with its arguments; the result holds its return value."""
    from django_tasks import TaskContext, task_backends
    from django_tasks.utils import normalize_json

    if run_after is not None and run_after > timezone.now():
        # Waits without a worker and without spending a retry.
        raise Reschedule((run_after - timezone.now()).total_seconds())
    if not _signed({"function": function, "args": args, "kwargs": kwargs, "signature": signature}):
        raise PermanentFailure("The call's signature does not match (not made by enqueuing a task).", "Unsigned")
    task = task_of(function)
    try:
        if task.takes_context:
            result = task_backends[backend].get_result(f"{ctx.batch_id}.{ctx.seq}")
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
    except Exception as exc:
        raise OperationFailure(str(exc) or repr(exc), error_type_of(exc)) from exc
    return {"return_value": normalize_json(value)}
