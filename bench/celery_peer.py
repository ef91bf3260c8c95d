"""The Celery peer of bench/engine.py: a group of no-op tasks with results, on 2 worker processes.

Runs in bench/.venv-celery (celery[redis]); prints one JSON line: {"n": ..., "seconds": ...}.
    bench/.venv-celery/bin/python bench/celery_peer.py REDIS_URL N
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery, group

BROKER = os.environ.get("CELERY_BROKER") or sys.argv[1]
app = Celery("bench_celery", broker=BROKER, backend=BROKER)
app.conf.update(worker_prefetch_multiplier=4, task_acks_late=False, result_expires=600)


@app.task(name="bench.noop")
def noop() -> None:
    return None


def main() -> None:
    n = int(sys.argv[2])
    here = Path(__file__).resolve().parent
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_peer",
            "worker",
            "--concurrency",
            "2",
            "--pool",
            "prefork",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=here,
        env={"PYTHONPATH": str(here), "CELERY_BROKER": BROKER, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        app.control.ping(timeout=1)
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5) and time.monotonic() < deadline:
            pass
        group(noop.s() for _ in range(50)).apply_async().get(timeout=60)  # warm up
        started = time.perf_counter()
        group(noop.s() for _ in range(n)).apply_async().get(timeout=600)
        print(json.dumps({"n": n, "seconds": time.perf_counter() - started}))
    finally:
        worker.terminate()
        worker.wait(30)


if __name__ == "__main__":
    main()
