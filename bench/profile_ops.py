"""Where a noop operation's time goes: run lanes directly (no RQ), count SQL statements per
operation, time one lane and two concurrent lanes (forked processes), optionally cProfile.

    .venv/bin/python bench/profile_ops.py [--n 2000] [--debug true|false] [--cprofile]

Same isolation as bench/run.py (Redis DB 12, prefixes batchsite-bench) with its own var dir
/tmp/batchsite-bench-profile; do not run it while bench/run.py runs (both flush Redis DB 12).
"""

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = Path("/tmp/batchsite-bench-profile")


def setup(debug: str) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="batchsite.settings",
        REDIS_URL="redis://127.0.0.1:6379/12",
        BATCHSITE_VAR_DIR=str(VAR_DIR),
        BATCHSITE_REDIS_PREFIX="batchsite-bench",
        CHANNELS_PREFIX="batchsite-bench",
        DEBUG=debug,
        SECRET_KEY="bench-profile-not-secret",
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    shutil.rmtree(VAR_DIR, ignore_errors=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def new_batch(user, n: int, max_parallel: int):
    from jobs import services
    from jobs.models import Batch, BatchStatus

    batch = services.batch_create(
        owner=user,
        type="noop",
        name="profile",
        items=[f"op-{i}" for i in range(n)],
        max_parallel=max_parallel,
        start=False,
    )
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.QUEUED)  # no RQ lanes: we run them
    return batch


def one_lane(batch, profile: bool) -> None:
    from django.db import connection

    from jobs.engine.lane import Lane

    kinds: Counter = Counter()

    def count(execute, sql, params, many, context):
        kinds[sql.split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)

    lane = Lane(str(batch.pk), "profile-lane-1")
    profiler = cProfile.Profile() if profile else None
    with connection.execute_wrapper(count):
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        reason = lane.run()
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
    batch.refresh_from_db()
    done = batch.completed
    print(f"1 lane in-process: {done:,} ops in {seconds:.2f} s = {done / seconds:,.0f} ops/s (stopped: {reason})")
    per_op = {kind: round(number / done, 2) for kind, number in kinds.most_common()}
    print(f"   SQL statements per operation: {sum(kinds.values()) / done:.2f} {per_op}")
    if profiler:
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        stats.print_stats(30)


def two_lanes(batch) -> None:
    """Two forked processes each running one lane on the same batch (what 2 RQ horses do)."""
    from django.db import connections

    from jobs.engine.lane import Lane

    connections.close_all()
    started = time.perf_counter()
    children = []
    for index in range(2):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                Lane(str(batch.pk), f"profile-lane-{index}").run()
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    seconds = time.perf_counter() - started
    batch.refresh_from_db()
    print(
        f"2 lanes, 2 processes: {batch.completed:,} ops in {seconds:.2f} s = {batch.completed / seconds:,.0f} ops/s "
        f"(status {batch.status})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--debug", default="true")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    setup(args.debug)
    import django_rq
    from django.conf import settings
    from django.contrib.auth.models import User

    redis = django_rq.get_connection("default")
    redis.flushdb()
    try:
        print(f"DEBUG={settings.DEBUG}, load {os.getloadavg()[0]:.2f}")
        user = User.objects.create(username="profile")
        one_lane(new_batch(user, args.n, 1), args.cprofile)
        two_lanes(new_batch(user, args.n, 2))
    finally:
        redis.flushdb()


if __name__ == "__main__":
    main()
