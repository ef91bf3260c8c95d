"""Batchsite benchmark: raw RQ against the Batchsite engine, batch creation time, worker memory.

    .venv/bin/python bench/run.py            # 10,000 / 100,000 operations
    .venv/bin/python bench/run.py --quick    # 1,000 / 10,000 operations

Isolated from other users of the machine: Redis DB 12 (flushed at start and end), prefixes
`batchsite-bench`, var dir /tmp/batchsite-bench with a fresh SQLite database. With DATABASE_URL
set (PostgreSQL) that database is only migrated, and the batches created here are deleted at the end.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = Path("/tmp/batchsite-bench")
BENCH_ENV = {
    "DJANGO_SETTINGS_MODULE": "batchsite.settings",
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
    "BATCHSITE_VAR_DIR": str(VAR_DIR),
    "BATCHSITE_REDIS_PREFIX": "batchsite-bench",
    "CHANNELS_PREFIX": "batchsite-bench",
    "PYTHONUNBUFFERED": "1",
    # Workers run without DEBUG, as scripts/run starts them (no per-query log).
    "DEBUG": "false",
    "SECRET_KEY": "benchmark-only-secret-key",
    "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
}
# The progress bar's aria-valuetext (templates/jobs/_bar.html): "<p> percent, <c> completed, <f>
# failed, <s> skipped of <total>"; the live benchmarks read how many are done from each frame.
PROGRESS_TEXT = re.compile(r"percent, (\d+) completed, (\d+) failed, (\d+) skipped of (\d+)")


def isolate(name: str, redis_db: int) -> None:
    """Give a benchmark its own Redis database, prefixes and var folder (/tmp/batchsite-bench-NAME)."""
    global VAR_DIR
    VAR_DIR = Path(f"/tmp/batchsite-bench-{name}")
    BENCH_ENV.update(
        {
            "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "BATCHSITE_VAR_DIR": str(VAR_DIR),
            "BATCHSITE_REDIS_PREFIX": f"batchsite-bench-{name}",
            "CHANNELS_PREFIX": f"batchsite-bench-{name}",
        }
    )


def done_count(text: str) -> int | None:
    """Operations done (completed, failed, skipped) as a page frame's progress bar says, or None."""
    found = PROGRESS_TEXT.search(text)
    return sum(map(int, found.group(1, 2, 3))) if found else None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


RAW_QUEUE = "bench-raw"
RAW_FUNCTION = "bench.rq_noop.noop"
ENQUEUE_CHUNK = 1000
POLL_S = 0.05
RSS_SAMPLE_S = 0.5
STALL_TIMEOUT_S = 120

GOAL_RATIO = 5.0
GOAL_CREATE_10K_S = 1.0
GOAL_RSS_GROWTH_MB = 30.0

PYTHON = sys.executable
RQ_CLI = str(Path(sys.executable).parent / "rq")


# --- environment ------------------------------------------------------------------------------


def prepare_environment() -> bool:
    """Set the isolating environment before Django loads; True if the database is our own SQLite."""
    os.environ.update(BENCH_ENV)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(ROOT))
    own_sqlite = not os.environ.get("DATABASE_URL")
    if own_sqlite:
        shutil.rmtree(VAR_DIR, ignore_errors=True)
    (VAR_DIR / "logs").mkdir(parents=True, exist_ok=True)
    return own_sqlite


def setup_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def redis_connection():
    import django_rq

    return django_rq.get_connection("default")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


# --- worker processes -------------------------------------------------------------------------


class WorkerGroup:
    """Worker processes started here, with their work horses; all of them die in stop()."""

    started: list["WorkerGroup"] = []

    def __init__(self, name: str, argv: list[str], count: int) -> None:
        self.name = name
        self.processes: list[subprocess.Popen] = []
        for index in range(count):
            log = open(VAR_DIR / "logs" / f"{name}-{index}.log", "ab")
            self.processes.append(
                subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=dict(os.environ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches only us; we kill them ourselves
                )
            )
            log.close()
        WorkerGroup.started.append(self)

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.processes}

    def wait_registered(self, timeout: float = 60) -> None:
        from rq import Worker

        deadline = time.monotonic() + timeout
        while {w.pid for w in Worker.all(connection=redis_connection())} < self.pids:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a {self.name} worker exited; see {VAR_DIR / 'logs'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} workers did not register within {timeout}s")
            time.sleep(0.1)

    def wait_idle(self, timeout: float = 30) -> None:
        """Until every worker is idle: start-up done (listening), or no work horse alive."""
        from rq import Worker

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ours = [w for w in Worker.all(connection=redis_connection()) if w.pid in self.pids]
            if ours and all(w.get_state() == "idle" and not w.get_current_job_id() for w in ours):
                time.sleep(0.5)
                return
            time.sleep(0.1)

    def family(self) -> list:
        import psutil

        members = []
        for process in self.processes:
            try:
                parent = psutil.Process(process.pid)
                members += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return members

    def rss(self) -> dict[int, int]:
        """RSS in bytes of every process of the group (workers, scheduler, work horses)."""
        import psutil

        sizes = {}
        for member in self.family():
            try:
                sizes[member.pid] = member.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return sizes

    def stop(self) -> None:
        import psutil

        family = self.family()
        for member in family:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=10)
        for process in self.processes:
            process.wait(timeout=10)
        WorkerGroup.started.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for group in list(cls.started):
            group.stop()


def start_raw_workers(count: int) -> WorkerGroup:
    url = os.environ["REDIS_URL"]
    group = WorkerGroup("rq-raw", [RQ_CLI, "worker", "--url", url, RAW_QUEUE], count)
    group.wait_registered()
    group.wait_idle()
    return group


def start_batchsite_workers(count: int) -> WorkerGroup:
    argv = [PYTHON, "manage.py", "rqworker", "high", "default", "low", "--with-scheduler"]
    group = WorkerGroup("batchsite", argv, count)
    group.wait_registered()
    group.wait_idle()
    return group


# --- measurements -----------------------------------------------------------------------------


def measure_raw_rq(n: int) -> float:
    """(a) n no-op jobs, one per item, through plain forking RQ workers; returns jobs/s."""
    from rq import Queue
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    from bench.rq_noop import COUNTER_KEY

    redis = redis_connection()
    queue = Queue(RAW_QUEUE, connection=redis)
    finished = FinishedJobRegistry(queue=queue)
    failed = FailedJobRegistry(queue=queue)
    redis.delete(COUNTER_KEY)
    started = time.perf_counter()
    for first in range(0, n, ENQUEUE_CHUNK):
        queue.enqueue_many([Queue.prepare_data(RAW_FUNCTION) for _ in range(first, min(n, first + ENQUEUE_CHUNK))])
    watch = Progress(n)
    while True:
        done = finished.get_job_count(cleanup=False)
        if failed.get_job_count(cleanup=False):
            raise RuntimeError(f"raw RQ jobs failed; see {VAR_DIR / 'logs'}")
        if done >= n and queue.count == 0:
            break
        watch.update(done)
        time.sleep(POLL_S)
    seconds = time.perf_counter() - started
    watch.clear()
    counted = int(redis.get(COUNTER_KEY) or 0)
    print(
        f"(a) raw RQ: {n:,} no-op jobs, 2 forking workers: {seconds:.2f} s, {n / seconds:,.0f} jobs/s "
        f"(INCR counter {counted:,}; {load()})"
    )
    return n / seconds


def run_batch(user, n: int, label: str, rss_of: WorkerGroup | None = None):
    """Create and start a noop batch, wait for finished_at; returns (batch, seconds, rss_stats)."""
    from jobs import services
    from jobs.models import Batch

    items = [f"op-{i}" for i in range(n)]
    batch = services.batch_create(owner=user, type="noop", name="bench", items=items, max_parallel=2)
    Created.ids.append(batch.pk)
    started = time.perf_counter()
    rss = RssTracker(rss_of)
    watch = Progress(n)
    last_done, last_change = -1, time.monotonic()
    while True:
        row = Batch.objects.filter(pk=batch.pk).values("finished_at", "completed", "failed", "skipped").get()
        if row["finished_at"] is not None:
            break
        done = row["completed"] + row["failed"] + row["skipped"]
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > STALL_TIMEOUT_S:
            raise RuntimeError(f"{label}: no progress for {STALL_TIMEOUT_S}s at {done:,}/{n:,}")
        watch.update(done)
        rss.sample()
        time.sleep(POLL_S)
    seconds = time.perf_counter() - started
    watch.clear()
    batch.refresh_from_db()
    return batch, seconds, rss


def report_batch(tag: str, batch, seconds: float) -> float:
    from django.db.models import Max

    n = batch.total
    engine_s = (batch.finished_at - batch.started_at).total_seconds()
    print(
        f"{tag} Batchsite: {n:,} noop operations, max_parallel 2, 2 workers: {seconds:.2f} s, "
        f"{n / seconds:,.0f} ops/s ({load()})"
    )
    print(
        f"    status {batch.status}, completed {batch.completed:,}, failed {batch.failed:,}; "
        f"started_at→finished_at {engine_s:.2f} s ({n / engine_s:,.0f} ops/s)"
    )
    last_op = batch.operations.aggregate(at=Max("finished_at"))["at"]
    if last_op and last_op > batch.finished_at:
        print(
            f"    NOTE: batch.finished_at is {(last_op - batch.finished_at).total_seconds():.2f} s before the last "
            f"operation's finished_at (stale timestamp: taken before waiting for the lock); first "
            f"operation started→last finished {(last_op - batch.started_at).total_seconds():.2f} s"
        )
    return n / seconds


def measure_creation(user, n: int) -> float:
    """(d) batch_create(start=False) of n label-only items; returns seconds."""
    from jobs import services

    items = [f"item-{i}" for i in range(n)]
    started = time.perf_counter()
    batch = services.batch_create(owner=user, type="noop", name="bench create", items=items, start=False)
    seconds = time.perf_counter() - started
    Created.ids.append(batch.pk)
    return seconds


class RssTracker:
    """Samples a worker group's RSS during a run: peak of the whole group and growth inside
    each process it saw (a work horse lives one lane slice)."""

    def __init__(self, group: WorkerGroup | None) -> None:
        self.group = group
        self.next_at = 0.0
        self.peak_total = 0
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}

    def sample(self) -> None:
        if self.group is None or time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + RSS_SAMPLE_S
        sizes = self.group.rss()
        self.peak_total = max(self.peak_total, sum(sizes.values()))
        for pid, rss in sizes.items():
            self.first.setdefault(pid, rss)
            self.last[pid] = rss

    @property
    def max_process_growth(self) -> int:
        return max((self.last[pid] - self.first[pid] for pid in self.first), default=0)


class Progress:
    """A one-line progress display on stderr when it is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.next_at = 0.0

    def update(self, done: int) -> None:
        if self.tty and time.monotonic() >= self.next_at:
            self.next_at = time.monotonic() + 0.5
            sys.stderr.write(f"\r  {done:,}/{self.total:,} ")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class Created:
    """Rows this run made, deleted at the end when the database is not our own."""

    ids: list = []
    user = None
    user_is_ours = False


def bench_user():
    from django.contrib.auth.models import User

    user, created = User.objects.get_or_create(username="batchsite-bench")
    Created.user, Created.user_is_ours = user, created
    return user


def cleanup_database() -> None:
    from jobs.models import Batch

    Batch.objects.filter(pk__in=Created.ids).delete()
    if Created.user_is_ours:
        Created.user.delete()


def mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --- the run ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 / 10,000 operations instead of 10,000 / 100,000")
    args = parser.parse_args()
    small, large = (1_000, 10_000) if args.quick else (10_000, 100_000)

    own_sqlite = prepare_environment()
    # Ctrl-C and kill both unwind through the finally below, which stops the workers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    setup_django()
    from django.conf import settings
    from django.db import connection

    redis = redis_connection()
    redis.flushdb()
    print(f"Batchsite bench{' --quick' if args.quick else ''}: {os.cpu_count()} CPUs, {load()}")
    print(
        f"    database {connection.vendor} ({'fresh' if own_sqlite else 'DATABASE_URL'}), "
        f"Redis {settings.REDIS_URL}, DEBUG={settings.DEBUG}, "
        f"progress interval {settings.BATCHSITE_PROGRESS_INTERVAL_S}s, lane slice {settings.BATCHSITE_LANE_SLICE_S}s"
    )
    try:
        user = bench_user()

        raw_workers = start_raw_workers(2)
        raw_rate = measure_raw_rq(small)
        raw_workers.stop()

        workers = start_batchsite_workers(2)
        batch, seconds, _ = run_batch(user, small, "(b)")
        site_rate = report_batch("(b)", batch, seconds)
        ratio = site_rate / raw_rate
        print(f"(c) ratio b/a: {ratio:.2f}   goal ≥ {GOAL_RATIO:g}: {verdict(ratio >= GOAL_RATIO)}")

        for n in (small, large):
            seconds = measure_creation(user, n)
            goal = f"   goal ≤ {GOAL_CREATE_10K_S:g} s: {verdict(seconds <= GOAL_CREATE_10K_S)}" if n == 10_000 else ""
            print(f"(d) create {n:,}-operation batch (start=False): {seconds:.2f} s{goal}")

        workers.wait_idle()
        before = sum(workers.rss().values())
        batch, seconds, rss = run_batch(user, large, "(e)", rss_of=workers)
        workers.wait_idle()
        after = sum(workers.rss().values())
        report_batch("(e)", batch, seconds)
        growth = after - before
        print(
            f"(e) worker RSS (2 workers + children), idle before/after the {large:,}-op batch: "
            f"{mb(before)} / {mb(after)}, growth {mb(growth)}   "
            f"goal < {GOAL_RSS_GROWTH_MB:g} MB: {verdict(growth < GOAL_RSS_GROWTH_MB * 2**20)}"
        )
        print(
            f"    during the run: peak {mb(rss.peak_total)} incl. work horses; "
            f"largest growth inside one process {mb(rss.max_process_growth)}"
        )
    finally:
        WorkerGroup.stop_all()
        redis.flushdb()
        if not own_sqlite:
            cleanup_database()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
