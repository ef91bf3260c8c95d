"""Scale-out on one machine: two daphne processes behind nginx, workers on a second "host" (a network
namespace joined by a veth pair, its own host name) and workers here, one PostgreSQL and one Redis.

One batch runs on both hosts while a page on each web server follows it; the pair's link is cut
mid-batch (the second host's operations are recovered by the workers here) and restored (its late
outcomes are fenced out): the counters stay exact and both pages end on the same, true state.

Needs PostgreSQL (SQLite cannot be shared between hosts), root (namespaces), `ip`, `unshare` and
nginx (.ci/run installs nginx-light); skipped with the reason elsewhere.
"""

import contextlib
import os
import re
import shutil
import socket
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jobs import services
from jobs.engine import dispatch
from jobs.models import Batch, BatchEvent, BatchEventKind, Operation
from tests import hosts
from tests.conftest import database_url_for_subprocess, wait_for
from tests.invariants import assert_counters_match_rows

OPERATIONS = 240
# The progress bar's aria-valuetext (templates/jobs/_bar.html).
DONE = re.compile(r"percent, (\d+) completed, (\d+) failed, (\d+) skipped of (\d+)")
STATUS = re.compile(r'id="batch-title">[^<]*<span class="chip chip-(\w+)"')
NS_WORKER = f"{hosts.SecondHost.HOSTNAME}:"


def requirements_or_skip() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite cannot be shared between hosts: the scale-out test runs on PostgreSQL only")
    if os.geteuid() != 0:
        pytest.skip("network namespaces and veth pairs need root")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed (iproute2, util-linux)")
    if hosts.nginx_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: .ci/run installs nginx-light")
        pytest.skip("nginx is not installed (apt-get install nginx-light): the test needs a reverse proxy")


class PageWatcher(threading.Thread):
    """A batch page's WebSocket, as the browser opens it, recording every frame."""

    def __init__(self, url: str, cookie: str, origin: str) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, {"Cookie": cookie, "Origin": origin}
        self.upstream = ""
        self.frames: list[str] = []
        self.opened = threading.Event()
        self.stopping = threading.Event()
        self.error: Exception | None = None
        self.start()
        self.opened.wait(20)
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        try:
            with connect(self.url, additional_headers=self.headers, open_timeout=15) as socket:
                self.upstream = socket.response.headers.get("X-Upstream", "")
                self.opened.set()
                while not self.stopping.is_set():
                    try:
                        self.frames.append(str(socket.recv(timeout=0.5)))
                    except TimeoutError:
                        continue
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.error = exc
        finally:
            self.opened.set()

    def done_counts(self) -> list[int]:
        return [sum(map(int, found.group(1, 2, 3))) for frame in self.frames if (found := DONE.search(frame))]

    def statuses(self) -> list[str]:
        return [found.group(1) for frame in self.frames if (found := STATUS.search(frame))]

    def close(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def through(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    auth = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{auth}{host}:{port}"))


def completed_by(batch: Batch, prefix: str, *, exclude: bool = False) -> int:
    found = Operation.objects.filter(batch=batch, status="completed")
    found = found.exclude(worker__startswith=prefix) if exclude else found.filter(worker__startswith=prefix)
    return found.count()


def ns_entry() -> dict | None:
    return next((info for name, info in dispatch.live_workers().items() if name.startswith(NS_WORKER)), None)


@pytest.mark.timeout(150)
def test_two_web_servers_and_a_second_host_share_a_batch_through_a_cut_link(workers, staff, tmp_path):
    requirements_or_skip()
    second = hosts.SecondHost()
    try:
        second.create()
    except RuntimeError as exc:
        pytest.skip(f"this machine forbids network namespaces: {exc}")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(second.close)
        # Both hosts: 4 slots each, so that a batch of max_parallel 8 needs both; a worker cut off
        # mid-transaction loses its session (and the batch lock) after 2 s, not hours.
        workers.env |= {"BATCHSITE_WORKER_CONCURRENCY": "4", "BATCHSITE_WORKER_IDLE_IN_TRANSACTION_S": "2"}
        database_url, redis_url = database_url_for_subprocess(), settings.REDIS_URL
        database, redis = urlsplit(database_url), urlsplit(redis_url)
        to_database = hosts.Forwarder(second.HOST_ADDRESS, database.port or 5432)
        cleanup.callback(to_database.close)
        to_redis = hosts.Forwarder(second.HOST_ADDRESS, redis.port or 6379)
        cleanup.callback(to_redis.close)
        far_env = workers.env | {
            "DATABASE_URL": through(database_url, second.HOST_ADDRESS, to_database.port),
            "REDIS_URL": through(redis_url, second.HOST_ADDRESS, to_redis.port),
        }
        worker_command = [sys.executable, "manage.py", "rqworker", "high", "default", "low"]
        second.start(worker_command + ["--with-scheduler"], far_env, tmp_path / "ns-worker.log")
        workers.start(1)
        wait_for(ns_entry, 30, message="the second host's worker to register over the veth pair")

        web = [hosts.Daphne(workers.env, tmp_path / f"daphne-{n}.log") for n in (1, 2)]
        for server in web:
            cleanup.callback(server.close)
        for server in web:
            server.wait()
        proxy = hosts.Nginx([server.port for server in web], tmp_path / "nginx")
        cleanup.callback(proxy.close)

        client = Client()
        client.force_login(staff)
        hosts_seen = {w["host"] for w in client.get("/api/workers").json()["workers"]}
        assert hosts_seen == {socket.gethostname(), second.HOSTNAME}

        batch = services.batch_create(
            owner=staff,
            type="demo.sleep",
            name="scale-out",
            items=[f"op-{n}" for n in range(OPERATIONS)],
            params={"duration_ms": 100},
            max_parallel=8,
            start=False,
        )
        origin = f"http://127.0.0.1:{proxy.port}"
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        pages = [PageWatcher(f"ws://127.0.0.1:{proxy.port}/ws/batches/{batch.pk}/", cookie, origin) for _ in (1, 2)]
        for page in pages:
            cleanup.callback(page.close)
        assert {page.upstream for page in pages} == {f"127.0.0.1:{server.port}" for server in web}

        services.batch_start(batch=batch)
        wait_for(lambda: completed_by(batch, NS_WORKER) >= 8, 30, message="the second host to complete operations")
        second.cut()
        cut_at = time.monotonic()
        wait_for(
            lambda: BatchEvent.objects.filter(batch=batch, kind=BatchEventKind.REAPED).exists(),
            30,
            message="the workers here to recover the second host's operations",
        )
        wait_for(lambda: Batch.objects.get(pk=batch.pk).finished_at, 40, message="the batch to finish without it")
        batch.refresh_from_db()
        assert batch.status == "completed" and batch.completed == OPERATIONS
        assert_counters_match_rows(batch)
        finished_without = time.monotonic() - cut_at

        # Back on the network, the second host reports what it ran meanwhile: fenced out.
        second.restore()
        wait_for(
            lambda: (entry := ns_entry()) is not None and entry["batches"] == [],
            40,
            message="the second host to come back and let go of the batch",
        )
        batch.refresh_from_db()
        assert batch.completed == OPERATIONS and batch.status == "completed"
        assert_counters_match_rows(batch)
        assert completed_by(batch, NS_WORKER) >= 8 and completed_by(batch, NS_WORKER, exclude=True) >= 8

        final = f"{OPERATIONS} completed, 0 failed, 0 skipped of {OPERATIONS}"
        wait_for(lambda: all(final in page.frames[-1] for page in pages if page.frames), 10, message=final)
        for page in pages:
            counts = page.done_counts()
            assert len(set(counts)) >= 3, counts  # live progress, not only the first and last state
            assert counts == sorted(counts) and counts[-1] == OPERATIONS
            assert page.statuses()[-1] == "completed"
        print(f"batch finished {finished_without:.1f} s after the link was cut")
