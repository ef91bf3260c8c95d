import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import django_rq
import psutil
import pytest
from django.contrib.auth.models import User
from django.db import connection
from pytest_httpserver import HTTPServer

from tests.databases import mysql_scratch, pg_scratch, sqlite_db  # noqa: E402,F401  (fixtures: real databases for optypes)

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, message: str = ""):
    """Poll until predicate() is truthy; returns its value or fails the test with `message`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def run_operation(type_key: str, label: str = "item", *, state: dict | None = None, attempt: int = 1, **params):
    """Run one operation of a type in this process, as a lane would (params cleaned by the type's
    form first); returns its result or raises what it raises."""
    return run_operation_with_rows(type_key, label, state=state, attempt=attempt, **params)[0]


def run_operation_with_rows(
    type_key: str, label: str = "item", *, state: dict | None = None, attempt: int = 1, **params
):
    """run_operation, returning (result, the result rows it added)."""
    from jobs.optypes import get_type

    optype = get_type(type_key)
    rows: list[dict] = []
    context = SimpleNamespace(
        label=label, params=optype.clean_params(params), state=state, attempt=attempt, add_rows=rows.extend
    )
    result = optype.run(context)
    if inspect.iscoroutine(result):  # an async type: run on a loop of its own, as a lane would
        result = asyncio.run(result)
    return result, rows


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice", "alice@example.com", "alice-password")


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob", "bob@example.com", "bob-password")


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("sam", "sam@example.com", "sam-password", is_staff=True, is_superuser=True)


@pytest.fixture
def redis_clean():
    """The tests' own Redis database, empty before and after the test."""
    redis = django_rq.get_connection("default")
    redis.flushdb()
    yield redis
    redis.flushdb()


def database_url_for_subprocess() -> str:
    """The URL of the database this test runs against (the test database, not the configured one)."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}/{settings['NAME']}"


class WorkerPool:
    """Real `manage.py rqworker` processes against the test database and Redis."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url_for_subprocess(),
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
        }

    def start(self, count: int = 1, *, wait: bool = True) -> list[subprocess.Popen]:
        from django.conf import settings

        started = []
        for _ in range(count):
            test_name = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0].split("::")[-1]
            log = open(Path(settings.VAR_DIR) / f"worker-{test_name}-{len(self.processes) + 1}.log", "w")
            process = subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", "high", "default", "low", "--with-scheduler"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so a kill also reaches the RQ scheduler process it forks.
                start_new_session=True,
            )
            self.processes.append(process)
            started.append(process)
        if wait:
            from rq import Worker

            redis = django_rq.get_connection("default")
            alive = len([p for p in self.processes if p.poll() is None])
            wait_for(lambda: len(Worker.all(connection=redis)) >= alive, 30, message="workers to register")
            # Scheduled lanes (retry backoff) need a scheduler holding the queue locks.
            wait_for(lambda: redis.exists("rq:scheduler-lock:default"), 30, message="the RQ scheduler")
        return started

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL a worker and its work horses (which run in their own process group)."""
        try:
            family = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for member in family:
            try:
                os.kill(member.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=10)

    def horse_pids(self) -> list[int]:
        pids = []
        for process in self.processes:
            try:
                pids += [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return pids

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.kill(process)
        self.processes.clear()


@pytest.fixture
def workers(transactional_db, redis_clean):
    pool = WorkerPool()
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session")
def make_httpserver():
    """pytest-httpserver's `httpserver`, threaded (workers call it concurrently, and a slow answer
    must not hold up the others) and on 127.0.0.1, which worker processes reach for sure."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()
