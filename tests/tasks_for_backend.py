"""Django tasks (django-tasks' `@task`) that the tests enqueue through jobs.tasks_backend; the
workers import them by module path."""

import asyncio

from django_tasks import TaskContext, task


class Refused(Exception):
    pass


@task()
def add(a: int, b: int = 0) -> int:
    return a + b


@task(priority=10)
def shout(word: str) -> str:
    return word.upper() + "!"


@task()
def refuse(reason: str) -> None:
    raise Refused(reason)


@task(takes_context=True)
def flaky(context: TaskContext, fail_times: int) -> dict:
    """Fails its first `fail_times` attempts."""
    if context.attempt <= fail_times:
        raise ValueError(f"attempt {context.attempt} fails")
    return {"attempt": context.attempt, "id": context.task_result.id}


@task()
async def add_later(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b
