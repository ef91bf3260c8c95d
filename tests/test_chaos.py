"""Chaos: real workers, real Redis and databases, and faults in the middle of a batch.

Each test breaks something while a `demo.sleep` batch with max_retries 0 runs (a worker killed,
frozen, Redis restarted, flushed or unreachable, the database connections cut) and then checks
what a person relies on: every operation terminal, the counters exact, one terminal event, no
result row counted twice, and `completed` when nothing really failed. Time is bounded: each test
allows its batch a minute after the fault ends.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.db import connection
from django.db.models import Count

from jobs import services
from jobs.models import Batch, Operation, ResultRow
from tests.conftest import ROOT, wait_for
from tests.invariants import assert_counters_match_rows, finished_events

pytestmark = pytest.mark.workers

RECOVERY_S = 60


def sleep_batch(owner, count: int, duration_ms: int, max_parallel: int = 8, **options) -> Batch:
    return services.batch_create(
        owner=owner,
        type="demo.sleep",
        name="chaos",
        items=[f"op-{i}" for i in range(1, count + 1)],
        params={"duration_ms": duration_ms},
        max_parallel=max_parallel,
        **options,
    )


def completed_count(batch: Batch) -> int:
    return Batch.objects.filter(pk=batch.pk).values_list("completed", flat=True).get()


def busy_worker(workers, batch: Batch):
    """The worker process running operations of the batch now."""

    def find():
        running = set(Operation.objects.filter(batch=batch, status="running").values_list("worker", flat=True))
        return next((p for p in workers.processes if any(w.endswith(f":{p.pid}") for w in running)), None)

    return wait_for(find, 30, message="a worker running the batch")


def assert_finished_cleanly(batch: Batch, timeout: float = RECOVERY_S) -> Batch:
    """Every operation terminal and completed (nothing really failed), counters exact, one
    terminal event, one result row per operation."""

    def finished() -> bool:
        batch.refresh_from_db()
        return batch.is_terminal

    wait_for(finished, timeout, message=f"batch {batch.short_id} to finish")
    assert batch.status == "completed", (batch.status, list(batch.operations.values_list("error_type", "error")))
    assert set(batch.operations.values_list("status", flat=True)) == {"completed"}
    assert finished_events(batch) == 1
    assert_counters_match_rows(batch)
    rows_per_operation = ResultRow.objects.filter(batch=batch).values("operation").annotate(n=Count("id"))
    assert sorted(row["n"] for row in rows_per_operation) == [1] * batch.total, "a result row counted twice"
    return batch


def test_a_sigkilled_worker_loses_no_operation_and_spends_no_retry(alice, workers):
    workers.start(2)
    batch = sleep_batch(alice, count=40, duration_ms=400, max_parallel=8)
    workers.kill(busy_worker(workers, batch))
    batch = assert_finished_cleanly(batch)
    lost = batch.operations.filter(lost__gt=0)
    assert lost.exists(), "the killed worker had operations running"
    assert all(op.auto_retries == 0 and op.status == "completed" for op in lost)
    assert batch.events.filter(kind="reaped").exists()


def test_killing_the_worker_that_holds_the_rq_scheduler_does_not_stall_delayed_work(alice, workers, redis_clean):
    """Retry backoff and not-yet-due operations are timed by the executors, not by RQ's scheduler."""
    workers.start(2)
    # RQ's scheduler is a child process of the worker that holds its lock (ours fork nothing else).
    owner = next(p for p in workers.processes if psutil.Process(p.pid).children())
    batch = services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="backoff",
        items=[f"op-{i}" for i in range(12)],
        params={"duration_ms": 50, "fail_attempts": 1},
        max_retries=1,
        retry_backoff_s=2,
        max_parallel=4,
    )
    wait_for(lambda: Operation.objects.filter(batch=batch, auto_retries=1).exists(), 30, message="a retry to wait")
    killed_at = time.monotonic()
    workers.kill(owner)
    assert_finished_cleanly(batch, timeout=30)
    # RQ would bring its scheduler back only in its 10-minute maintenance pass.
    assert time.monotonic() - killed_at < 30


def test_a_frozen_worker_is_recovered_and_its_late_outcomes_are_ignored(alice, workers):
    """SIGSTOP past BATCHSITE_STALE_AFTER_S: its operations run again elsewhere; after SIGCONT its
    outcomes of those attempts no longer count (the attempt fence)."""
    workers.start(2)
    batch = sleep_batch(alice, count=30, duration_ms=500, max_parallel=8)
    frozen = busy_worker(workers, batch)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: batch.events.filter(kind="reaped").exists(), 30, message="the frozen worker's operations reaped"
        )
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    assert_finished_cleanly(batch)


def test_the_batch_goes_on_through_a_redis_flush(alice, workers, redis_clean):
    workers.start(2)
    batch = sleep_batch(alice, count=40, duration_ms=300, max_parallel=8)
    wait_for(lambda: completed_count(batch) >= 5, 30)
    redis_clean.flushdb()  # lanes, queues, registries and stop flags gone at once
    assert_finished_cleanly(batch)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="cuts PostgreSQL connections (pg_terminate_backend)")
def test_cut_database_connections_lose_no_outcome(alice, workers):
    workers.start(2)
    batch = sleep_batch(alice, count=40, duration_ms=300, max_parallel=8)
    wait_for(lambda: completed_count(batch) >= 5, 30)
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        time.sleep(0.7)
    batch = assert_finished_cleanly(batch)
    assert not batch.operations.filter(error_type="WorkerLost").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="cuts PostgreSQL connections (pg_terminate_backend)")
def test_after_the_database_cut_its_connections_the_next_lane_job_does_not_fail(alice, workers):
    import django_rq

    workers.start(1)
    assert_finished_cleanly(sleep_batch(alice, count=3, duration_ms=20))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert_finished_cleanly(sleep_batch(alice, count=3, duration_ms=20))
    failed = {name: django_rq.get_queue(name).failed_job_registry.count for name in ("high", "default", "low")}
    assert failed == {"high": 0, "default": 0, "low": 0}, "a lane job failed on a dead connection"


# --- a Redis of the test's own ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class OwnRedis:
    """A redis-server on its own port, in memory, that the test may stop and start."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(argv, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 10, message="the test's redis-server")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def create_on(redis_url: str, workers, *args: str) -> Batch:
    """Create a batch with the `batch` command in a process that talks to `redis_url`."""
    env = {**workers.env, "REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "batch", "create", "--user", "alice", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return Batch.objects.get(pk=result.stdout.split()[2])


def chaos_args(count: int, duration_ms: int) -> list[str]:
    items = []
    for i in range(1, count + 1):
        items += ["--item", f"op-{i}"]
    return [
        "--type",
        "demo.sleep",
        "--name",
        "chaos",
        "--param",
        f"duration_ms={duration_ms}",
        "--max-parallel",
        "8",
        *items,
    ]


def test_a_redis_restart_mid_batch_neither_stops_the_workers_nor_the_batch(alice, workers, own_redis):
    workers.env["REDIS_URL"] = own_redis.url
    workers.start(2, wait=False)
    batch = create_on(own_redis.url, workers, *chaos_args(40, 300))
    wait_for(lambda: completed_count(batch) >= 5, 60, message="the batch to start on the test's Redis")
    own_redis.stop()  # nothing on disk: queues, lanes and locks are gone when it comes back
    time.sleep(1)
    own_redis.start()
    assert_finished_cleanly(batch)
    assert all(process.poll() is None for process in workers.processes), "a worker exited"


def test_workers_ride_out_a_redis_outage(alice, workers, own_redis):
    workers.env["REDIS_URL"] = own_redis.url
    workers.start(2, wait=False)
    batch = create_on(own_redis.url, workers, *chaos_args(40, 300))
    wait_for(lambda: completed_count(batch) >= 5, 60, message="the batch to start on the test's Redis")
    own_redis.stop()
    time.sleep(6)  # an outage longer than a heartbeat's lifetime
    assert all(process.poll() is None for process in workers.processes), "a worker exited during the outage"
    own_redis.start()
    assert_finished_cleanly(batch)


# --- the protocol under concurrent interleavings --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_outcomes_recoveries_and_cancels_keep_the_invariants(alice):
    """Threads race through the claim/outcome protocol on one batch the way workers do (claims in
    groups, outcomes reported twice, late reports of reaped attempts), while another thread samples
    the running count: never above max_parallel, and the counters equal the rows at the end."""
    import random
    from datetime import timedelta

    from django.db import connections
    from django.utils import timezone

    batch = services.batch_create(
        owner=alice, type="noop", name="race", items=[f"i{n}" for n in range(300)], max_parallel=6, start=False
    )
    services.batch_start(batch=batch)
    batch_id = str(batch.pk)
    peak = {"running": 0}
    stop = threading.Event()
    errors: list[BaseException] = []

    def sampler() -> None:
        try:
            while not stop.is_set():
                peak["running"] = max(
                    peak["running"], Operation.objects.filter(batch_id=batch_id, status="running").count()
                )
        finally:
            connections.close_all()

    def racer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while True:
                claims = services.operations_claim(batch_id=batch_id, worker=f"racer-{seed}", limit=rng.randint(1, 4))
                if not isinstance(claims, list):
                    if claims.reason in ("empty", "inactive", "gone"):
                        return
                    time.sleep(0.001)
                    continue
                outcomes = []
                for claim in claims:
                    roll = rng.random()
                    if roll < 0.1:
                        Operation.objects.filter(pk=claim.operation_id).update(
                            heartbeat_at=timezone.now() - timedelta(hours=1)
                        )
                        services.operation_recover_lost(operation_id=claim.operation_id, stale_before=timezone.now())
                    kind = "failed" if roll > 0.9 else "completed"
                    outcomes.append(services.Outcome(claim, kind, 1, error="boom", error_type="Boom"))
                if rng.random() < 0.3:
                    outcomes += outcomes[:1]  # a doubled report
                services.operations_record(batch_id=batch_id, outcomes=outcomes)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    watcher = threading.Thread(target=sampler)
    watcher.start()
    racers = [threading.Thread(target=racer, args=(seed,)) for seed in range(4)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(120)
    stop.set()
    watcher.join(10)
    assert errors == []
    batch.refresh_from_db()
    assert batch.is_terminal and batch.pending == batch.running == 0
    assert peak["running"] <= 6
    assert finished_events(batch) == 1
    assert_counters_match_rows(batch)


def test_a_redis_outage_is_logged_once_by_the_publisher_and_once_when_it_ends(own_redis, settings, caplog):
    import logging

    from channels_redis.core import RedisChannelLayer

    from jobs.live.publisher import Publisher

    settings.REDIS_URL = own_redis.url
    settings.BATCHSITE_PROGRESS_INTERVAL_S = 0.01
    events = Publisher()
    events.layer = RedisChannelLayer(hosts=[own_redis.url], prefix="outage-test")

    def event(version: int) -> dict:
        return {"batch_id": "b1", "owner_id": 1, "version": version, "status": "running"}

    events.submit(event(1), urgent=True)
    events.flush(10)
    caplog.set_level(logging.WARNING, logger="jobs.live.publisher")
    own_redis.stop()
    for version in range(2, 80):
        events.submit(event(version), urgent=version % 2 == 0)
        time.sleep(0.005)
    events.flush(10)
    own_redis.start()
    events.submit(event(80), urgent=True)
    events.flush(10)

    lines = [record.getMessage() for record in caplog.records if record.name == "jobs.live.publisher"]
    assert len([line for line in lines if "does not answer" in line]) == 1, lines[:5]
    assert len([line for line in lines if "answers again after" in line]) == 1, lines[-3:]
    assert len(lines) == 2, lines[:5]
