"""Live pages benchmark: server time of a 100,000-operation batch's page, and the latency and rate
of WebSocket frames a subscriber of a running batch receives.

    .venv/bin/python bench/pages.py            # 100,000-operation page, 1,000-operation live batch
    .venv/bin/python bench/pages.py --quick    # 10,000 / 200

Isolated like bench/run.py, with Redis DB 11 and /tmp/batchsite-bench-pages (fresh SQLite unless
DATABASE_URL is set; then the batches made here are deleted afterwards).
(a) GET /batches/<id>/ of a 100,000-operation batch: first page, last page, a status filter
(goal ≤ 150 ms). (b) A 1,000-operation demo.sleep batch (10 ms each, 4 lanes, 2 workers) watched
through the real consumer on the real Redis channel layer: for every operation, the time from its
finished_at to the first frame whose counts include it (p50/p95; goal p95 ≤ 250 ms), and frames
per second during the run (goal ≤ 10).
"""

import argparse
import asyncio
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run  # noqa: E402

run.isolate("pages", redis_db=11)
run.BENCH_ENV["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
GOAL_PAGE_MS = 150
GOAL_LATENCY_P95_MS = 250
GOAL_FRAMES_PER_S = 10
STATUS = re.compile(r'id="batch-title">[^<]*<span class="chip chip-(\w+)"')


def measure_page(user, n: int) -> None:
    from django.test import Client

    from jobs import services

    started = time.perf_counter()
    batch = services.batch_create(
        owner=user, type="noop", name=f"page-{n}", items=[f"item-{i}" for i in range(n)], start=False
    )
    run.Created.ids.append(batch.pk)
    print(f"created a {n:,}-operation batch in {time.perf_counter() - started:.2f} s")
    client = Client()
    client.force_login(user)
    last_page = (n + 49) // 50
    for label, url in (
        ("first page", f"/batches/{batch.pk}/"),
        (f"last page ({last_page})", f"/batches/{batch.pk}/?page={last_page}"),
        ("status filter", f"/batches/{batch.pk}/?status=pending&page=10"),
        ("dashboard", "/"),
    ):
        times = []
        for _ in range(15):
            began = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.status_code
        p50 = statistics.median(times)
        ok = p50 <= GOAL_PAGE_MS
        print(
            f"(a) {label:<22} p50 {p50:6.1f} ms  max {max(times):6.1f} ms   goal ≤ {GOAL_PAGE_MS} ms: {run.verdict(ok)}"
        )


async def watch(user, n: int) -> None:
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.test import Client

    from batchsite.asgi import application
    from jobs import services
    from jobs.models import Batch, Operation

    client = Client()
    await sync_to_async(client.force_login)(user)
    batch = await sync_to_async(services.batch_create)(
        owner=user,
        type="demo.sleep",
        name=f"live-{n}",
        items=[f"op-{i}" for i in range(n)],
        params={"duration_ms": 10},
        max_parallel=4,
        start=False,
    )
    run.Created.ids.append(batch.pk)
    headers = [
        (b"origin", b"http://testserver"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    communicator = WebsocketCommunicator(application, f"/ws/batches/{batch.pk}/", headers=headers)
    assert (await communicator.connect())[0]
    await communicator.receive_from(timeout=10)  # the state on connect
    shown: list[tuple[float, int]] = []  # (arrival time, operations finished as the frame shows)
    frames = 0
    await sync_to_async(services.batch_start)(batch=batch)
    began = time.time()
    finished_at = None
    while True:
        try:
            message = await communicator.receive_from(timeout=15)
        except TimeoutError:
            break
        now = time.time()
        frames += 1
        done = run.done_count(message)
        if done is not None:
            shown.append((now, done))
        status = STATUS.search(message)
        if status and status.group(1) in ("completed", "failed", "partial_success", "cancelled"):
            finished_at = now
            break
    await communicator.disconnect()
    elapsed = (finished_at or time.time()) - began
    finish_times = await sync_to_async(
        lambda: sorted(
            t.timestamp()
            for t in Operation.objects.filter(batch=batch, finished_at__isnull=False).values_list(
                "finished_at", flat=True
            )
        )
    )()
    # The operation that finished r-th is on the page with the first frame counting r or more.
    latencies = []
    for rank, finished in enumerate(finish_times, start=1):
        arrival = next((at for at, count in shown if count >= rank), None)
        if arrival is not None:
            latencies.append((arrival - finished) * 1000)
    state = await sync_to_async(Batch.objects.get)(pk=batch.pk)
    print(
        f"(b) {n:,}-operation batch {state.status} in {elapsed:.1f} s; {len(latencies):,} of {n:,} operations "
        f"seen in {frames:,} frames"
    )
    if latencies:
        p50, p95 = run.percentile(latencies, 0.5), run.percentile(latencies, 0.95)
        print(
            f"    finish → frame latency p50 {p50:.0f} ms, p95 {p95:.0f} ms   goal p95 ≤ {GOAL_LATENCY_P95_MS} ms: "
            f"{run.verdict(p95 <= GOAL_LATENCY_P95_MS)}"
        )
    rate = frames / elapsed if elapsed else 0
    print(
        f"    frames per second at one subscriber: {rate:.1f}   goal ≤ {GOAL_FRAMES_PER_S}: {run.verdict(rate <= GOAL_FRAMES_PER_S)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000-operation page, 200-operation live batch")
    args = parser.parse_args()
    own_sqlite = run.prepare_environment()
    run.setup_django()
    redis = run.redis_connection()
    redis.flushdb()
    print(f"Batchsite pages benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {run.load()}")
    try:
        user = run.bench_user()
        measure_page(user, 10_000 if args.quick else 100_000)
        workers = run.start_batchsite_workers(2)
        try:
            asyncio.run(watch(user, 200 if args.quick else 1_000))
        finally:
            workers.stop()
    finally:
        run.WorkerGroup.stop_all()
        if not own_sqlite:
            run.cleanup_database()
        redis.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
