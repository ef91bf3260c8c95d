"""Authoring costs: params validation of a typed type against the same params as a hand-written
form, and the Django Tasks backend's enqueue (a batch per call) and batch_enqueue (one batch of
many calls). Creation only: no workers run.

    .venv/bin/python bench/authoring.py [--calls 200] [--batch 2000]

Isolated: fresh SQLite in /tmp/batchsite-bench-authoring, Redis DB ${BENCH_REDIS_DB:-4} (its lane
jobs are flushed at the end), prefix batchsite-bench-authoring.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = Path("/tmp/batchsite-bench-authoring")


def setup() -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="batchsite.settings",
        REDIS_URL=f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', '4')}",
        BATCHSITE_VAR_DIR=str(VAR_DIR),
        BATCHSITE_REDIS_PREFIX="batchsite-bench-authoring",
        CHANNELS_PREFIX="batchsite-bench-authoring",
        DEBUG="false",
        SECRET_KEY="bench-authoring-not-secret",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    shutil.rmtree(VAR_DIR, ignore_errors=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def per_second(function, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        function()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    options = parser.parse_args()
    setup()
    from django import forms

    from jobs.optypes import OperationType, get_type

    class SleepForm(forms.Form):
        duration_ms = forms.IntegerField(min_value=0, max_value=3_600_000, initial=100)
        failure_rate = forms.FloatField(min_value=0, max_value=1, initial=0)
        seed = forms.IntegerField(required=False)
        fail_attempts = forms.IntegerField(min_value=0, max_value=10, initial=0)

    typed = get_type("demo.sleep")
    by_form = OperationType(key="bench.form", label="form", run=lambda ctx: None, form=SleepForm)
    params = {"duration_ms": 20, "failure_rate": 0.1}
    print(f"clean_params, typed demo.sleep:        {per_second(lambda: typed.clean_params(params), 20000):8.0f} /s")
    print(f"clean_params, the same as a form type: {per_second(lambda: by_form.clean_params(params), 20000):8.0f} /s")

    import django_rq

    from tests import tasks_for_backend as tasks

    rate = per_second(lambda: tasks.add.enqueue(1, 2), options.calls)
    print(f"add.enqueue() (a batch each):          {rate:8.0f} /s over {options.calls}")
    from jobs.tasks_backend import batch_enqueue

    start = time.perf_counter()
    batch_enqueue(tasks.add, [(n, n) for n in range(options.batch)], name="bench")
    print(f"batch_enqueue of {options.batch} calls:          {time.perf_counter() - start:8.2f} s")
    django_rq.get_connection("default").flushdb()


if __name__ == "__main__":
    main()
