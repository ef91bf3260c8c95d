"""The workers page, `GET /api/workers`, `batch workers` and their WebSocket: what live workers
report, staff only, and a dead worker leaving the list."""

import io
import json
import signal
import socket
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.test import Client

from jobs import services
from jobs.engine import dispatch
from jobs.live.consumers import FORBIDDEN
from jobs.models import Batch
from tests.conftest import wait_for
from tests.invariants import assert_counters_match_rows
from tests.test_consumers import connect, receive_until


def api_workers(client: Client) -> dict:
    response = client.get("/api/workers")
    assert response.status_code == 200, response.content
    return response.json()


def worker_entry(name: str, **info) -> None:
    """What a worker's heartbeat writes, for the tests that need no process behind it."""
    now = time.time()
    entry = {"host": "far-host", "pid": 4242, "queues": ["high", "default", "low"], "state": "idle"}
    entry |= {"started_at": now - 60, "heartbeat_at": now, "concurrency": 8, "running": 0, "batches": []}
    dispatch.worker_register(name, entry | {"operations": [], "cpu_percent": 3.5, "rss_bytes": 50 * 2**20} | info)


def test_live_workers_show_what_they_run_and_a_killed_one_leaves(workers, staff):
    processes = workers.start(2)
    batch = services.batch_create(
        owner=staff,
        type="demo.sleep",
        name="watched",
        items=[f"op-{n}" for n in range(24)],
        params={"duration_ms": 400},
        max_parallel=4,
    )
    client = Client()
    client.force_login(staff)
    pids = {p.pid for p in processes}
    listed = wait_for(
        lambda: (data := api_workers(client)) and {w["pid"] for w in data["workers"]} == pids and data,
        20,
        message="both workers in GET /api/workers",
    )
    for worker in listed["workers"]:
        assert worker["host"] == socket.gethostname()
        assert worker["queues"] == ["high", "default", "low"]
        assert worker["concurrency"] == 8 and worker["rss_bytes"] > 10 * 2**20
        assert worker["heartbeat_age_s"] < listed["expires_after_s"]
    busy = wait_for(
        lambda: [w for w in api_workers(client)["workers"] if w["operations"]],
        20,
        message="a worker running operations",
    )
    operation = busy[0]["operations"][0]
    assert operation["batch_id"] == str(batch.pk) and operation["batch_name"] == "watched"
    assert operation["url"].startswith(f"/batches/{batch.pk}/")
    assert {"id": str(batch.pk), "name": "watched", "url": f"/batches/{batch.pk}/"} in busy[0]["batches"]
    assert busy[0]["state"] == "busy" and 1 <= busy[0]["running"] <= 4

    page = client.get("/workers/")
    assert page.status_code == 200
    html = page.content.decode()
    assert all(f"pid {pid}" in html for pid in pids)
    assert f'href="/batches/{batch.pk}/"' in html and 'ws-connect="/ws/workers/"' in html

    out = io.StringIO()
    call_command("batch", "workers", "--json", stdout=out)
    assert {w["pid"] for w in json.loads(out.getvalue())["workers"]} == pids

    victim = processes[0]
    workers.kill(victim)
    killed_at = time.monotonic()
    wait_for(
        lambda: victim.pid not in {w["pid"] for w in api_workers(client)["workers"]},
        listed["expires_after_s"] + 5,
        message="the killed worker to leave the list",
    )
    assert time.monotonic() - killed_at <= listed["stale_after_s"] + 2
    assert f"pid {victim.pid}" not in client.get("/workers/").content.decode()

    # What the survivor finished is in the throughput after its next heartbeat (the killed one's
    # last counts died with it).
    wait_for(lambda: Batch.objects.get(pk=batch.pk).finished_at, 30, message="the batch to finish")
    survivor = batch.operations.filter(status="completed", worker__endswith=f":{processes[1].pid}").count()
    assert survivor > 0
    redis = dispatch.redis_connection()
    reported = lambda: sum(int(redis.get(key) or 0) for key in redis.keys(dispatch._throughput_key(0)[:-1] + "*"))  # noqa: E731
    wait_for(lambda: reported() >= survivor, 10, message="the finished operations in the throughput")


def test_staff_only_everywhere(client, alice, redis_clean):
    assert client.get("/workers/").status_code == 302  # to the sign-in page
    assert client.get("/api/workers").status_code == 401
    client.force_login(alice)
    assert client.get("/workers/").status_code == 403
    response = client.get("/api/workers")
    assert response.status_code == 403 and response.json()["message"] == "Staff only."
    assert 'href="/workers/"' not in client.get("/").content.decode()


def test_the_nav_links_the_workers_page_for_staff(client, staff, redis_clean):
    client.force_login(staff)
    assert 'href="/workers/"' in client.get("/").content.decode()


def test_throughput_is_whole_buckets_oldest_first(redis_clean):
    now = time.time()
    current = dispatch.throughput_bucket(now)
    dispatch.throughput_add({current - 10: 50, current - 20: 30, current: 999})
    dispatch.throughput_add({current - 10: 20})
    points = dispatch.throughput(60, until=now)
    assert [at for at, _ in points] == list(range(current - 60, current, 10))
    assert points[-1] == (current - 10, 70) and points[-2] == (current - 20, 30)
    assert all(count == 0 for _, count in points[:-2])  # and the unfinished bucket is left out


def test_the_command_says_when_this_host_has_no_worker(db, redis_clean):
    worker_entry("far-host:4242")
    out = io.StringIO()
    call_command("batch", "workers", stdout=out)
    assert "far-host" in out.getvalue() and "1 live worker(s), 0/8 slots in use" in out.getvalue()
    with pytest.raises(CommandError, match="No live worker on") as caught:
        call_command("batch", "workers", "--here", stdout=io.StringIO())
    assert caught.value.returncode == 1


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_socket_pushes_workers_joining_and_leaving(redis_clean, staff, alice):
    refused = await connect("/ws/workers/", alice)
    assert await refused.receive_output(timeout=5) == {"type": "websocket.close", "code": FORBIDDEN}
    await refused.disconnect()

    communicator = await connect("/ws/workers/", staff)
    first = await receive_until(communicator, 'id="workers-live"')
    assert 'hx-swap-oob="true"' in first and "No live worker" in first
    await sync_to_async(worker_entry)("far-host:4242", state="busy", running=2)
    joined = await receive_until(communicator, "far-host")
    assert "pid 4242" in joined and "2 / 8" in joined
    await sync_to_async(dispatch.worker_unregister)("far-host:4242")
    await receive_until(communicator, "No live worker")
    await communicator.disconnect()


def test_sigterm_finishes_short_operations_and_hands_long_ones_back(workers, staff):
    workers.env["BATCHSITE_STOP_GRACE_S"] = "1.5"
    [worker] = workers.start(1)
    items = [{"label": f"short-{n}", "params": {"duration_ms": 300}} for n in range(2)]
    items += [{"label": f"long-{n}", "params": {"duration_ms": 20_000}} for n in range(2)]
    batch = services.batch_create(owner=staff, type="demo.sleep", name="stopping", items=items, max_parallel=4)
    wait_for(lambda: Batch.objects.get(pk=batch.pk).running == 4, 20, message="all four running")
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=20)
    batch.refresh_from_db()
    assert (batch.completed, batch.pending, batch.running) == (2, 2, 0)  # finished within the grace, handed back
    assert set(batch.operations.filter(status="completed").values_list("label", flat=True)) == {"short-0", "short-1"}
    assert_counters_match_rows(batch)
    assert str(worker.pid) not in str(dispatch.live_workers())  # it left the registry itself
    # Handed back as new attempts, at once: another worker takes them up.
    workers.start(1)
    wait_for(
        lambda: batch.operations.filter(label__startswith="long-", status="running", attempts=2).count() == 2,
        20,
        message="another worker to run the handed-back operations",
    )
    services.batch_cancel(batch=batch, by=staff)
    batch.refresh_from_db()
    assert batch.status == "cancelled" and batch.completed == 2
    assert_counters_match_rows(batch)
