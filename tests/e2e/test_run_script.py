"""The product as a user runs it: `./scripts/run` in one shell, `manage.py batch ...` in another.

Each process reads its settings on its own, so only this test sees whether they share what they
must (the secret key that encrypts instance URLs and secret params, the database, Redis).
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, wait_for
from tests.hosts import free_port, wait_for_port


def product_env(var_dir: Path, port: int) -> dict[str, str]:
    """A user's shell: none of the test suite's Batchsite settings, its own var dir and port, and
    the tests' Redis database (this test cleans it)."""
    from django.conf import settings

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BATCHSITE_", "DJANGO_", "CHANNELS_"))
        and key not in ("SECRET_KEY", "DATABASE_URL", "DEBUG", "PYTEST_CURRENT_TEST")
    }
    env.update(
        BATCHSITE_VAR_DIR=str(var_dir),
        PORT=str(port),
        WORKERS="1",
        WEB_PROCESSES="2",
        REDIS_URL=settings.REDIS_URL,
        BATCHSITE_REDIS_PREFIX=f"{settings.BATCHSITE_REDIS_PREFIX}-run",
        CHANNELS_PREFIX=f"{settings.BATCHSITE_REDIS_PREFIX}-run",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def running_product(tmp_path, redis_clean):
    """`./scripts/run` started as the README says, in its own var dir; yields (env, var dir)."""
    var_dir = tmp_path / "var"
    port = free_port()
    env = product_env(var_dir, port)
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "run")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port("127.0.0.1", port, process, timeout=120)
        wait_for(lambda: "Batchsite is running" in log_path.read_text(), timeout=60, message="the run banner")
        yield env, var_dir, log_path, port
    finally:
        # Ctrl-C, as a user stops it: the script stops its web server and workers itself.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.workers
def test_batches_using_secrets_complete_when_commands_run_in_another_shell(running_product, tmp_path, httpserver):
    env, var_dir, log_path, port = running_product
    # Several web processes answer on the one port, static files included (DEBUG is on by default).
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["migrations"] == "ok", ready.text
    assert httpx.get(f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=10).status_code == 200
    assert "2 daphne processes" in log_path.read_text()
    key_file = var_dir / "secret_key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600

    shop = tmp_path / "shop.sqlite3"
    with sqlite3.connect(shop) as database:
        database.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        database.executemany("INSERT INTO orders (total) VALUES (?)", [(10.5,), (20.0,), (7.25,)])

    added = manage(env, "batch", "instance", "add", "shop", f"sqlite:///{shop}")
    assert added.returncode == 0, added.stdout + added.stderr

    workflow = manage(
        env,
        "batch",
        "create",
        "--type",
        "sql.workflow",
        "--item",
        "shop",
        "--param",
        "query=SELECT count(*) AS orders, sum(total) AS revenue FROM orders",
        "--wait",
    )
    assert workflow.returncode == 0, workflow.stdout + workflow.stderr + log_path.read_text()[-3000:]

    httpserver.expect_request(
        "/pipelines/dim_customer/run", method="POST", headers={"Authorization": "Bearer s3cret"}
    ).respond_with_json({"rows": 12})
    pipeline = manage(
        env,
        "batch",
        "create",
        "--type",
        "pipeline.http",
        "--item",
        "dim_customer",
        "--param",
        f"url={httpserver.url_for('/pipelines/{label}/run')}",
        "--param",
        'headers={"Authorization": "Bearer s3cret"}',
        "--wait",
    )
    assert pipeline.returncode == 0, pipeline.stdout + pipeline.stderr + log_path.read_text()[-3000:]
    httpserver.check_assertions()

    listed = manage(env, "batch", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    batches = {batch["type"]: batch for batch in json.loads(listed.stdout)["items"]}
    assert batches["sql.workflow"]["status"] == "completed" and batches["pipeline.http"]["status"] == "completed"
