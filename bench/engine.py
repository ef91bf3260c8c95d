"""Engine benchmark (the "Engine 2" issue): Batchsite against its peers, side by side, in one run.

    .venv/bin/python bench/engine.py            # about 4 minutes on 2 cores
    .venv/bin/python bench/engine.py --quick    # smaller counts, about a minute

Measures, on this machine, one after the other:
- 5,000 no-op operations with 2 worker processes: Batchsite on SQLite and on PostgreSQL
  (max_parallel 16, 8 slots per worker), raw RQ with forking workers (1,000 jobs: it is slow), RQ's
  SimpleWorker, and a Celery group with results (prefork, concurrency 2, Redis broker and backend;
  Celery lives in its own virtualenv, bench/.venv-celery, made here on first use);
- 2,000 `demo.sleep` of 50 ms at max_parallel 8 and 32 (2 workers with 8, then 16 slots each):
  efficiency = ideal time (n × 50 ms / max_parallel) / measured;
- creating 10,000 and 100,000 operations with `batch_create` against a plain `bulk_create` of the
  same rows;
- the peak RSS of one worker running 32 operations at once.
Goals: noop ≥ 2× the Celery group and ≥ 10× raw RQ on both databases; sleep efficiency ≥ 0.9 at 8 and
≥ 0.8 at 32; creation ≤ 1.5× bulk_create; RSS < 200 MB at concurrency 32.

Isolated: Redis DB 5 (flushed), prefixes `batchsite-bench`; SQLite in /tmp/batchsite-bench; PostgreSQL
database `batchsite_bench` at 127.0.0.1:5432 (created if missing; DATABASE_URL overrides it).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
PG_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/batchsite_bench")
CELERY_VENV = ROOT / "bench" / ".venv-celery"


def measure_batchsite(args) -> dict:
    """Runs in a subprocess whose environment picks the database."""
    sys.path.insert(0, str(ROOT))
    from bench import run as b

    b.prepare_environment()
    b.setup_django()
    from django.db import connection

    from jobs import services
    from jobs.models import Batch, Operation

    user = b.bench_user()
    figures: dict = {"database": connection.vendor}

    def run(n: int, type_: str, max_parallel: int, params: dict, rss_of=None) -> tuple[float, object]:
        batch = services.batch_create(
            owner=user,
            type=type_,
            name="bench",
            items=[f"op-{i}" for i in range(n)],
            params=params,
            max_parallel=max_parallel,
            rate_limit=False,
        )
        b.Created.ids.append(batch.pk)
        started = time.perf_counter()
        peak = 0
        while not Batch.objects.filter(pk=batch.pk, finished_at__isnull=False).exists():
            if rss_of is not None:
                peak = max(peak, max(rss_of.rss().values(), default=0))
            time.sleep(0.02)
        batch.refresh_from_db()
        assert batch.status == "completed", batch.status
        return time.perf_counter() - started, peak

    def workers(count: int, concurrency: int):
        os.environ["BATCHSITE_WORKER_CONCURRENCY"] = str(concurrency)
        b.redis_connection().flushdb()
        return b.start_batchsite_workers(count)

    group = workers(2, 8)
    try:
        run(200, "noop", 16, {})  # warm up: imports, connections
        seconds, _ = run(args.noop, "noop", 16, {})
        figures["noop"] = args.noop / seconds
        seconds, _ = run(args.sleep, "demo.sleep", 8, {"duration_ms": 50})
        figures["sleep8"] = (args.sleep * 0.05 / 8) / seconds
    finally:
        group.stop()
    group = workers(2, 16)
    try:
        seconds, _ = run(args.sleep, "demo.sleep", 32, {"duration_ms": 50})
        figures["sleep32"] = (args.sleep * 0.05 / 32) / seconds
    finally:
        group.stop()
    group = workers(1, 32)
    try:
        _, peak = run(args.sleep // 2, "demo.sleep", 32, {"duration_ms": 50}, rss_of=group)
        figures["rss32_mb"] = peak / 2**20
    finally:
        group.stop()
    for n in (10_000, args.create):
        items = [f"item-{i}" for i in range(n)]
        started = time.perf_counter()
        batch = services.batch_create(
            owner=user, type="noop", name="create", items=items, start=False, rate_limit=False
        )
        figures[f"create{n}"] = time.perf_counter() - started
        b.Created.ids.append(batch.pk)
        started = time.perf_counter()
        plain = Batch.objects.create(owner=user, type="noop", name="plain", total=n, pending=n)
        Operation.objects.bulk_create(
            (Operation(batch=plain, seq=i, label=label) for i, label in enumerate(items, start=1)), batch_size=2000
        )
        figures[f"bulk{n}"] = time.perf_counter() - started
        b.Created.ids.append(plain.pk)
    b.cleanup_database()
    return figures


def measure_rq(worker_class: str, n: int) -> float:
    """n no-op jobs through 2 `rq worker` processes of the given class; jobs per second."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    from redis import Redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    redis = Redis.from_url(REDIS)
    redis.flushdb()
    rq_cli = str(Path(sys.executable).parent / "rq")
    argv = [rq_cli, "worker", "--url", REDIS, "bench-raw", "--worker-class", worker_class]
    processes = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)
    ]
    try:
        from rq import Worker

        while len(Worker.all(connection=redis)) < 2:
            time.sleep(0.1)
        queue = Queue("bench-raw", connection=redis)
        finished = FinishedJobRegistry(queue=queue)
        started = time.perf_counter()
        for first in range(0, n, 1000):
            queue.enqueue_many([Queue.prepare_data("bench.rq_noop.noop") for _ in range(first, min(n, first + 1000))])
        while finished.get_job_count(cleanup=False) < n:
            time.sleep(0.02)
        return n / (time.perf_counter() - started)
    finally:
        for process in processes:
            process.kill()
            process.wait()
        redis.flushdb()


def measure_celery(n: int) -> float:
    python = CELERY_VENV / "bin" / "python"
    if not python.exists():
        print("  making bench/.venv-celery (celery[redis]) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(CELERY_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "bench" / "requirements-celery.txt")],
            check=True,
        )
    result = subprocess.run(
        [str(python), str(ROOT / "bench" / "celery_peer.py"), REDIS, str(n)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return data["n"] / data["seconds"]


def batchsite_on(database_url: str | None, args) -> dict:
    env = {**os.environ, "BENCH_REDIS_URL": REDIS}
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
        from urllib.parse import urlsplit

        name = urlsplit(database_url).path.lstrip("/")
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {name}"], capture_output=True
        )
    argv = [
        sys.executable,
        __file__,
        "--measure",
        "--noop",
        str(args.noop),
        "--sleep",
        str(args.sleep),
        "--create",
        str(args.create),
    ]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--noop", type=int, default=5000)
    parser.add_argument("--sleep", type=int, default=2000)
    parser.add_argument("--create", type=int, default=100_000)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_batchsite(args)))
        return 0
    if args.quick:
        args.noop, args.sleep, args.create = 2000, 800, 20_000
    os.environ["REDIS_URL"] = REDIS
    print(f"Engine benchmark, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start", flush=True)
    peers = {
        "raw RQ, forking (1,000 jobs)": measure_rq("rq.worker.Worker", min(args.noop, 1000)),
        "RQ SimpleWorker": measure_rq("rq.worker.SimpleWorker", args.noop),
        "Celery group with results": measure_celery(args.noop),
    }
    print("  peers measured", flush=True)
    sites = {"SQLite": batchsite_on(None, args), "PostgreSQL": batchsite_on(PG_URL, args)}
    celery, raw = peers["Celery group with results"], peers["raw RQ, forking (1,000 jobs)"]
    print(f"\n{args.noop:,} no-op operations, 2 worker processes (ops/s)")
    for name, rate in peers.items():
        print(f"  {name:34} {rate:8,.0f}")
    for name, figures in sites.items():
        rate = figures["noop"]
        ok = rate >= 2 * celery and rate >= 10 * raw
        print(
            f"  Batchsite on {name:21} {rate:8,.0f}   {rate / celery:.1f}× Celery, {rate / raw:.1f}× raw RQ  {'ok' if ok else 'MISSED'}"
        )
    print(f"\n{args.sleep:,} demo.sleep of 50 ms: efficiency (ideal / measured)")
    for name, figures in sites.items():
        print(
            f"  {name:11} max_parallel 8: {figures['sleep8']:.2f} ({'ok' if figures['sleep8'] >= 0.9 else 'MISSED'} ≥ 0.9)"
            f"   max_parallel 32: {figures['sleep32']:.2f} ({'ok' if figures['sleep32'] >= 0.8 else 'MISSED'} ≥ 0.8)"
        )
    print("\nCreating a batch (batch_create) against a plain bulk_create of the same rows")
    for name, figures in sites.items():
        for n in (10_000, args.create):
            ratio = figures[f"create{n}"] / figures[f"bulk{n}"]
            print(
                f"  {name:11} {n:>7,}: {figures[f'create{n}']:.2f} s vs {figures[f'bulk{n}']:.2f} s = {ratio:.2f}× "
                f"({'ok' if ratio <= 1.5 else 'MISSED'} ≤ 1.5×)"
            )
    print("\nOne worker running 32 operations at once: peak RSS")
    for name, figures in sites.items():
        print(f"  {name:11} {figures['rss32_mb']:.0f} MB ({'ok' if figures['rss32_mb'] < 200 else 'MISSED'} < 200 MB)")
    print(f"\nload {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
