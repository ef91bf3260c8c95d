"""Load benchmark of the web side: many WebSocket subscribers on the web processes while a large batch runs,
and the JSON API under concurrent clients.

    .venv/bin/python bench/live_load.py                     # 1,000 subscribers, 10,000 operations
    .venv/bin/python bench/live_load.py --subscribers 200 --operations 2000
    .venv/bin/python bench/live_load.py --api                # 50 clients on /progress: 1 then 2 daphne

Isolated like bench/run.py: Redis DB 9 (flushed at start and end), prefixes `batchsite-bench-live`,
var dir /tmp/batchsite-bench-live with a fresh SQLite database unless DATABASE_URL is set (then the
rows made here are deleted at the end). Web servers on 127.0.0.1:8103 and :8113.

(a) Subscribers: every subscriber opens the batch page's WebSocket (`/ws/batches/<id>/`, the
browser's session cookie) on the web processes as scripts/run starts them (`--processes`, default
the core count, behind one port), then the batch (demo.sleep, 20 ms, max_parallel
16, 2 workers) starts. For each operation, the time from its finished_at to the first frame whose
counts include it, at each of a sample of subscribers (p50/p95/p99; goal p95 ≤ 250 ms); frames per
subscriber per second (goal ≤ 10); daphne's peak RSS and mean CPU; errors (failed or dropped
sockets; goal 0).
(b) API: `--clients` concurrent clients with a bearer token send GET /api/batches/{id}/progress for
`--seconds`, first against one daphne, then spread over two: requests per second, p50/p95, errors.
"""

import argparse
import asyncio
import bisect
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run  # noqa: E402

run.isolate("live", redis_db=9)
run.BENCH_ENV.update({"ALLOWED_HOSTS": "127.0.0.1,localhost,testserver", "LOG_LEVEL": "WARNING"})
PORTS = (8113, 8103)
GOAL_P95_MS = 250
GOAL_FRAMES_PER_S = 10
FINAL = re.compile(r'id="batch-title">[^<]*<span class="chip chip-(completed|failed|partial_success|cancelled)"')
HANDSHAKES_AT_ONCE = 20
LATENCY_SAMPLE = 100  # subscribers whose every frame is matched to the operations it shows


class Daphne:
    """The web tier as scripts/run starts it: `python -m batchsite.serve`, `processes` daphne
    processes on one port (1: a single daphne behind it)."""

    def __init__(self, port: int, processes: int = 1) -> None:
        self.port = port
        self.processes = processes
        log = open(run.VAR_DIR / "logs" / f"daphne-{port}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "batchsite.serve", "--port", str(port), "--processes", str(processes)],
            cwd=run.ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne on {port} did not start (see {log.name})") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Sampler:
    """CPU (percent of one core) and RSS of a process and its children (the web processes under
    batchsite.serve), every half second, in the event loop."""

    def __init__(self, pid: int) -> None:
        import psutil

        parent = psutil.Process(pid)
        self.processes = [parent, *parent.children()]
        self.cpu: list[float] = []
        self.rss: list[int] = []
        for process in self.processes:
            process.cpu_percent()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            self.cpu.append(sum(process.cpu_percent() for process in self.processes))
            self.rss.append(sum(process.memory_info().rss for process in self.processes))


async def subscribe(
    url: str, headers: dict, record: list, errors: list, done: asyncio.Event, opened, gate: asyncio.Semaphore
) -> None:
    from websockets.asyncio.client import connect

    try:
        async with gate:  # handshakes a few at a time, as page loads spread over time
            socket = await connect(url, additional_headers=headers, open_timeout=120, max_size=2**22)
        async with socket:
            opened()
            async for message in socket:
                at = time.time()
                text = str(message)
                count = run.done_count(text)
                record.append((at, -1 if count is None else count, len(text)))
                if FINAL.search(text):
                    done.set()
                    return
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        done.set()


async def measure_subscribers(user, cookie: str, subscribers: int, operations: int, daphne: Daphne) -> None:
    from asgiref.sync import sync_to_async

    from jobs import services
    from jobs.models import Batch, Operation

    batch = await sync_to_async(services.batch_create)(
        owner=user,
        type="demo.sleep",
        name=f"load-{operations}",
        items=[f"op-{i}" for i in range(operations)],
        params={"duration_ms": 20},
        max_parallel=16,
        start=False,
    )
    run.Created.ids.append(batch.pk)
    url = f"ws://127.0.0.1:{daphne.port}/ws/batches/{batch.pk}/"
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{daphne.port}"}
    records: list[list] = [[] for _ in range(subscribers)]
    ended = [asyncio.Event() for _ in range(subscribers)]
    errors: list[str] = []
    connected = 0

    def opened() -> None:
        nonlocal connected
        connected += 1

    began = time.monotonic()
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
    tasks = [
        asyncio.create_task(subscribe(url, headers, records[index], errors, ended[index], opened, gate))
        for index in range(subscribers)
    ]
    while connected + len(errors) < subscribers and time.monotonic() - began < 180:
        await asyncio.sleep(0.2)
    ramp_s = time.monotonic() - began
    # Everyone has the state on connect; what follows is the batch.
    await asyncio.sleep(1.0)
    for record in records:
        record.clear()
    sampler, own = Sampler(daphne.process.pid), Sampler(os.getpid())
    stop = asyncio.Event()
    sampling = asyncio.gather(sampler.run(stop), own.run(stop))
    await sync_to_async(services.batch_start)(batch=batch)
    started = time.time()
    try:
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ended)), timeout=600)
    except TimeoutError:
        errors.append("timed out waiting for the final frame")
    finished = time.time()
    stop.set()
    await sampling
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    state = await sync_to_async(Batch.objects.get)(pk=batch.pk)
    finish_times = await sync_to_async(
        lambda: sorted(
            t.timestamp()
            for t in Operation.objects.filter(batch=batch, finished_at__isnull=False).values_list(
                "finished_at", flat=True
            )
        )
    )()
    latencies: list[float] = []
    for record in records[:: max(1, subscribers // LATENCY_SAMPLE)]:
        frames = [(at, count) for at, count, _ in record if count >= 0]
        counts = [count for _, count in frames]
        for rank, finished_at in enumerate(finish_times, start=1):
            index = bisect.bisect_left(counts, rank)
            if index < len(frames):
                latencies.append((frames[index][0] - finished_at) * 1000)
    elapsed = max(1e-9, (state.finished_at.timestamp() if state.finished_at else finished) - started)
    rates = [len(record) / elapsed for record in records]
    complete = sum(1 for record in records if record and record[-1][1] == operations)
    sizes = [size for record in records for _, _, size in record]
    print(
        f"(a) {subscribers:,} subscribers on {daphne.processes} web process(es) (connected in {ramp_s:.1f} s); "
        f"{operations:,}-operation batch"
    )
    print(
        f"    batch {state.status} in {elapsed:.1f} s ({operations / elapsed:,.0f} ops/s); {complete:,} subscribers saw the end"
    )
    if latencies:
        p50, p95, p99 = (run.percentile(latencies, q) for q in (0.5, 0.95, 0.99))
        print(
            f"    finish → frame latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms "
            f"({len(latencies):,} samples)   goal p95 ≤ {GOAL_P95_MS} ms: {run.verdict(p95 <= GOAL_P95_MS)}"
        )
    print(
        f"    frames per subscriber per second: mean {statistics.mean(rates):.1f}, max {max(rates):.1f}   "
        f"goal ≤ {GOAL_FRAMES_PER_S}: {run.verdict(max(rates) <= GOAL_FRAMES_PER_S)}"
    )
    if sampler.rss:
        print(
            f"    web processes: peak RSS {run.mb(max(sampler.rss))}, CPU mean {statistics.mean(sampler.cpu):.0f} % "
            f"/ peak {max(sampler.cpu):.0f} % of one core"
        )
    if sizes:
        print(
            f"    frames: {len(sizes):,}, mean {statistics.mean(sizes) / 1024:.1f} KiB; this client process "
            f"(all subscribers) CPU mean {statistics.mean(own.cpu or [0]):.0f} % of one core"
        )
    print(
        f"    errors: {len(errors)}"
        + (f" (first: {errors[0]})" if errors else "")
        + f"   goal 0: {run.verdict(not errors)}"
    )


async def api_clients(urls: list[str], token: str, clients: int, seconds: float) -> tuple[int, list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        url = urls[index % len(urls)]
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                response = await http.get(url)
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - began) * 1000)

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(index, http) for index in range(clients)))
    return len(latencies), latencies, errors


def measure_api(user, clients: int, seconds: float) -> None:
    from jobs import services

    batch = services.batch_create(owner=user, type="noop", name="api-load", items=["a", "b", "c"], start=False)
    run.Created.ids.append(batch.pk)
    _, token = services.token_create(user=user, name="bench-live-load")
    servers = [Daphne(port) for port in PORTS]
    try:
        for count in (1, 2):
            urls = [f"http://127.0.0.1:{s.port}/api/batches/{batch.pk}/progress" for s in servers[:count]]
            asyncio.run(api_clients(urls, token, clients, 2.0))  # warm-up: connections, imports
            total, latencies, errors = asyncio.run(api_clients(urls, token, clients, seconds))
            print(
                f"(b) GET /api/batches/{{id}}/progress, {clients} clients, {count} daphne: {total / seconds:,.0f} req/s, "
                f"p50 {run.percentile(latencies, 0.5):.0f} ms, p95 {run.percentile(latencies, 0.95):.0f} ms, errors {errors}"
            )
    finally:
        for server in servers:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--operations", type=int, default=10_000)
    parser.add_argument("--api", action="store_true", help="only the API measurement (b)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="web processes, as WEB_PROCESSES (default: cores)"
    )
    args = parser.parse_args()
    own_sqlite = run.prepare_environment()
    run.setup_django()
    redis = run.redis_connection()
    redis.flushdb()
    print(
        f"Batchsite live load benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {run.load()}, {os.cpu_count()} cores"
    )
    try:
        from django.test import Client

        user = run.bench_user()
        if args.api:
            measure_api(user, args.clients, args.seconds)
            return 0
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        workers = run.start_batchsite_workers(2)
        daphne = Daphne(PORTS[0], args.processes)
        try:
            asyncio.run(measure_subscribers(user, cookie, args.subscribers, args.operations, daphne))
        finally:
            daphne.stop()
            workers.stop()
        print(f"    machine {run.load()} at the end")
    finally:
        run.WorkerGroup.stop_all()
        if not own_sqlite:
            run.cleanup_database()
        redis.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
