"""Engine 3 figures: named limits, async types and progress reports, on this machine, one run.

    .venv/bin/python bench/engine_three.py            # SQLite, about 2 minutes on 2 cores
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/engine_bench .venv/bin/python bench/engine_three.py

Measures, timed from the create call:
- a rate limit of 50/s held over 2 workers (500 no-ops at max_parallel 16 under `bench:rate`): the
  most starts in any 1 s window (goal: 50, within 5 %) and the mean rate;
- a concurrency limit of 3 over 2 workers: the most running at once (goal: 3);
- 2,000 async sleeps of 50 ms at max_parallel 100 on one worker (2 threads): efficiency = ideal
  time / measured (goal ≥ 0.8);
- 2,000 no-ops at max_parallel 16 on 2 workers, and 200 operations that each report progress and a
  log line 1,000 times (ops/s: what reports cost).

Isolated: Redis DB 11 (BENCH_REDIS_DB; flushed), prefixes `batchsite-bench-engine3`, SQLite in
/tmp/batchsite-bench-engine3 (or DATABASE_URL's database, rows removed at the end).
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as b  # noqa: E402

b.isolate("engine3", int(os.environ.get("BENCH_REDIS_DB", "11")))
os.environ["BATCHSITE_OPERATION_TYPES"] = "bench.engine_three_types"


def main() -> int:
    noop_only = "--noop-only" in sys.argv
    b.prepare_environment()
    b.setup_django()
    from django.db import connection

    import bench.engine_three_types  # noqa: F401
    from jobs import services
    from jobs.models import Batch

    user = b.bench_user()
    print(f"Engine 3 benchmark on {connection.vendor}, {os.cpu_count()} cores, load {b.load()}", flush=True)

    def run(n: int, type_: str, max_parallel: int, params: dict, **options) -> tuple[float, Batch]:
        started = time.perf_counter()
        batch = services.batch_create(
            owner=user,
            type=type_,
            name="bench",
            items=[f"op-{i}" for i in range(n)],
            params=params,
            max_parallel=max_parallel,
            rate_limit=False,
            **options,
        )
        b.Created.ids.append(batch.pk)
        while not Batch.objects.filter(pk=batch.pk, finished_at__isnull=False).exists():
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        batch.refresh_from_db()
        assert batch.status == "completed", batch.status
        return seconds, batch

    def workers(count: int, concurrency: int):
        os.environ["BATCHSITE_WORKER_CONCURRENCY"] = str(concurrency)
        b.redis_connection().flushdb()
        return b.start_batchsite_workers(count)

    lines = []
    group = workers(2, 8)
    try:
        run(200, "noop", 16, {})  # warm up
        seconds, _ = run(2000, "noop", 16, {})
        noop = 2000 / seconds
        lines.append(f"2,000 no-ops, max_parallel 16, 2 workers: {noop:,.0f} ops/s")
        if not noop_only:
            seconds, _ = run(200, "bench.reporting", 16, {"calls": 1000})
            lines.append(f"200 operations reporting 1,000 times each: {200 / seconds:,.0f} ops/s")

        if noop_only:
            print("\n".join(lines))
            return 0
        from jobs.models import Limit

        Limit.objects.update_or_create(key="bench:rate", defaults={"rate": 50, "per": "second", "concurrency": None})
        time.sleep(2.5)  # workers read the definitions at most every 2 s
        seconds, batch = run(500, "bench.span", 16, {"duration_ms": 0}, limit_keys=["bench:rate"])
        # When each run began, by its own clock (after its limits were taken).
        starts = sorted(operation.result["start"] for operation in batch.operations.all())
        most, first = 0, 0
        for last, moment in enumerate(starts):
            while moment - starts[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        # After the first window's burst, starts come at the rate: the mean over the rest.
        steady = (len(starts) - 51) / (starts[-1] - starts[50])
        ok = most <= 50 * 1.05 and steady >= 50 * 0.95
        lines.append(
            f"rate limit 50/s, 500 operations over 2 workers: at most {most} starts in any 1 s, {steady:.1f}/s "
            f"after the first second, {seconds:.1f} s from the create call  {'ok' if ok else 'MISSED'} (within 5 %)"
        )

        Limit.objects.update_or_create(key="bench:three", defaults={"concurrency": 3, "rate": None})
        time.sleep(2.5)  # workers read the definitions at most every 2 s
        _, batch = run(60, "bench.span", 16, {"duration_ms": 100}, limit_keys=["bench:three"])
        spans = [(operation.result["start"], operation.result["end"]) for operation in batch.operations.all()]
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        lines.append(
            f"concurrency limit 3, 60 × 100 ms over 2 workers: at most {peak} running at once  "
            f"{'ok' if peak == 3 else 'MISSED'} (3)"
        )
    finally:
        group.stop()

    group = workers(1, 2)
    try:
        run(100, "bench.async_sleep", 100, {"duration_ms": 50})  # warm up
        seconds, _ = run(2000, "bench.async_sleep", 100, {"duration_ms": 50})
        efficiency = (2000 * 0.05 / 100) / seconds
        lines.append(
            f"2,000 async sleeps of 50 ms, max_parallel 100, one worker with 2 threads: efficiency {efficiency:.2f} "
            f"({seconds:.2f} s)  {'ok' if efficiency >= 0.8 else 'MISSED'} (≥ 0.8)"
        )
    finally:
        group.stop()
    from jobs.models import Limit

    Limit.objects.filter(key__startswith="bench:").delete()
    b.cleanup_database()
    print("\n".join(lines))
    print(f"load {b.load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
