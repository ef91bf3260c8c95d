"""The web tier under load, beside a framework floor, in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/NAME .venv/bin/python bench/api_load.py [--seconds 10]

Starts the web servers as scripts/run does (`python -m batchsite.serve`, WEB_PROCESSES daphne
processes on one socket, DEBUG off), and the floor (bench/floor_site.py: one Django JSON view, no
database) the same way. Then `wrk -t2 -c50` on /healthz, GET /api/batches/{id}/progress and GET
/api/batches/{id}, and one client in sequence (p50 of get, progress, list of 100, create of 10,
cancel, delete). Prints each figure with its goal and its ratio to the floor. Isolated: Redis DB 7
(flushed), prefix batchsite-bench-api, var dir /tmp/batchsite-bench-api. Needs wrk (apt-get install
wrk; installed here when missing and running as root).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
VAR = Path("/tmp/batchsite-bench-api")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHSITE_", "DJANGO_")) and k != "SECRET_KEY"}
    env.update(
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        BATCHSITE_VAR_DIR=str(VAR),
        REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"),
        BATCHSITE_REDIS_PREFIX="batchsite-bench-api",
        CHANNELS_PREFIX="batchsite-bench-api",
        BATCH_CREATE_RATE_LIMIT="0",
        LOG_LEVEL="WARNING",
    )
    return env


def serve(env: dict[str, str], port: int, application: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [PY, "-m", "batchsite.serve", "--port", str(port), "--application", application],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(VAR / f"serve-{port}.log", "w"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            time.sleep(1.5)  # every process up, not only the first
            return process
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server on {port} did not come up (see {VAR}/serve-{port}.log)")


def wrk(url: str, seconds: int, token: str = "") -> tuple[float, float, int]:
    """(requests/s, p50 ms, errors) of wrk -t2 -c50."""
    header = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(
        ["wrk", "-t2", "-c50", f"-d{seconds}s", "--latency", *header, url], capture_output=True, text=True
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p50_ms = float(p50.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p50.group(2)]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return rate, p50_ms, errors


def p50(call, n: int = 50) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def signed_in(base: str) -> httpx.Client:
    """A browser-like client with the bench user's session, signed in through the sign-in form."""
    browser = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
    page = browser.get("/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    answer = browser.post(
        "/accounts/login/",
        data={"username": "bench", "password": "bench-password", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{base}/accounts/login/"},
    )
    assert answer.status_code == 302, answer.text[:300]
    return browser


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    options = parser.parse_args()
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    env = environment()
    subprocess.run(["redis-cli", "-u", env["REDIS_URL"], "flushdb"], capture_output=True)
    subprocess.run(
        [
            PY,
            "-c",
            f"from batchsite.keyfile import ensure_key; from pathlib import Path; ensure_key(Path('{VAR}/secret_key'))",
        ],
        cwd=ROOT,
        check=True,
    )
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [
            PY,
            "manage.py",
            "shell",
            "-v0",
            "-c",
            "from django.contrib.auth.models import User; User.objects.filter(username='bench').exists() "
            "or User.objects.create_user('bench', '', 'bench-password')",
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    token = subprocess.run(
        [PY, "manage.py", "apitoken", "create", "--user", "bench", "--name", f"bench {time.time()}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[0]
    floor_port, port = free_port(), free_port()
    floor = serve(env, floor_port, "bench.floor_asgi:application")
    product = serve(env, port, "batchsite.asgi:application")
    base = f"http://127.0.0.1:{port}"
    try:
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        body = {
            "name": "bench",
            "type": "demo.sleep",
            "items": [f"item-{i}" for i in range(10)],
            "params": {"duration_ms": 1},
        }
        created = [client.post("/api/batches", json=body) for _ in range(100)]
        assert all(r.status_code == 201 for r in created), created[0].text
        batch_id = created[0].json()["id"]
        floor_rate, floor_p50, _ = wrk(f"http://127.0.0.1:{floor_port}/ping", options.seconds)
        rows = [("floor: minimal Django JSON view (no database)", floor_rate, floor_p50, 0, "")]
        for label, path, goal in (
            ("/healthz", "/healthz", 2000),
            ("GET /api/batches/{id}/progress", f"/api/batches/{batch_id}/progress", 1000),
            ("GET /api/batches/{id}", f"/api/batches/{batch_id}", 1000),
        ):
            rate, latency, errors = wrk(base + path, options.seconds, token)
            rows.append((label, rate, latency, errors, f">= {goal} req/s"))
        print(
            f"\nWeb tier, {os.cpu_count()} cores, {env.get('DATABASE_URL', 'SQLite')[:40]}, "
            f"WEB_PROCESSES={os.environ.get('WEB_PROCESSES', os.cpu_count())}, wrk -t2 -c50 -d{options.seconds}s"
        )
        print(f"{'':50} {'req/s':>8} {'p50 ms':>8} {'errors':>7} {'x floor':>8}  goal")
        for label, rate, latency, errors, goal in rows:
            print(f"{label:50} {rate:8.0f} {latency:8.1f} {errors:7d} {rate / floor_rate:8.2f}  {goal}")

        fresh = iter(c.json()["id"] for c in created[1:])
        sequential = [
            ("get", lambda: client.get(f"/api/batches/{batch_id}"), 10),
            ("progress", lambda: client.get(f"/api/batches/{batch_id}/progress"), 10),
            ("list of 100", lambda: client.get("/api/batches?limit=100"), 50),
            ("create of 10", lambda: client.post("/api/batches", json=body), 50),
            ("cancel", lambda: client.post(f"/api/batches/{next(fresh)}/cancel", json={}), 30),
        ]
        cancelled = [c.json()["id"] for c in created[1:]]
        browser = signed_in(base)
        sequential.append(("batch page (signed in)", lambda: browser.get(f"/batches/{batch_id}/"), 50))
        floor_client = httpx.Client(base_url=f"http://127.0.0.1:{floor_port}")
        print(
            f"\nOne client in sequence (p50 of 40-50 calls, one kept-alive connection); floor p50 {p50(lambda: floor_client.get('/ping')):.1f} ms"
        )
        for label, call, goal in sequential:
            print(f"{label:24} {p50(call, 45 if label == 'cancel' else 50):7.1f} ms   goal <= {goal} ms")
        deleted = iter(cancelled)
        print(
            f"{'delete':24} {p50(lambda: client.delete(f'/api/batches/{next(deleted)}'), 45):7.1f} ms   goal <= 30 ms"
        )
    finally:
        for process in (floor, product):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
