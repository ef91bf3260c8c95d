"""Serve the site with several daphne processes on one port.

Under ASGI a daphne process runs Django's sync code on threads that share one GIL, so one process
uses at most one core. This opens the listening socket once and starts `--processes` daphne
children that all accept on it (`daphne --fd`): one address for the browser and the API, every
core busy. WebSockets are served by the same processes; their pages share updates through the
Redis channel layer, so it does not matter which process a socket lands on.

    python -m batchsite.serve --port 8000 --processes 2 [--application batchsite.asgi:application]

A child that exits is started again (after 1 s, doubling to 30 s while it keeps dying within a
minute); SIGINT or SIGTERM stops all children and then this process.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAPHNE = Path(sys.executable).with_name("daphne")


def default_processes() -> int:
    return os.cpu_count() or 1


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(backlog)
    server.set_inheritable(True)
    return server


def start_child(application: str, fd: int, extra: list[str]) -> subprocess.Popen:
    # Web processes keep a PostgreSQL connection pool unless told otherwise (settings: DATABASE_POOL).
    env = {"DATABASE_POOL": "true", **os.environ}
    return subprocess.Popen([str(DAPHNE), "--fd", str(fd), *extra, application], pass_fds=(fd,), env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=int(os.environ.get("WEB_PROCESSES") or default_processes()))
    parser.add_argument("--application", default="batchsite.asgi:application")
    options, extra = parser.parse_known_args(argv)
    if options.processes < 1:
        parser.error("--processes (WEB_PROCESSES) must be at least 1")
    try:
        server = listen(options.host, options.port)
    except OSError as error:
        print(f"ERROR: cannot listen on {options.host}:{options.port}: {error.strerror}", file=sys.stderr)
        return 1

    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    fd = server.fileno()
    children = [start_child(options.application, fd, extra) for _ in range(options.processes)]
    started = [time.monotonic()] * len(children)
    delays = [1.0] * len(children)
    while not stopping:
        time.sleep(0.2)
        for index, child in enumerate(children):
            if stopping or child.poll() is None:
                continue
            if time.monotonic() - started[index] > 60:
                delays[index] = 1.0
            print(
                f"web process {child.pid} exited ({child.returncode}); starting another in {delays[index]:.0f} s",
                file=sys.stderr,
            )
            time.sleep(delays[index])
            children[index] = start_child(options.application, fd, extra)
            started[index] = time.monotonic()
            delays[index] = min(delays[index] * 2, 30.0)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
