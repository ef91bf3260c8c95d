"""Several "machines" on one: a second network namespace joined by a veth pair, TCP forwarders that
let it reach PostgreSQL and Redis (which listen on 127.0.0.1 only), daphne processes and an nginx
in front of them. Used by tests/test_scale_out.py; everything started here is stopped by `close()`
methods that never raise, so a failing test still leaves the machine clean."""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(host: str, port: int, process: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.1)


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def stop_process(process: subprocess.Popen | None, grace: float = 5) -> None:
    """SIGTERM the process's group, then SIGKILL what is left of it."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class Forwarder:
    """Listens on `listen_host` (a free port) and forwards each connection to 127.0.0.1:`target_port`.

    When the far side of a connection goes silent (its link cut), the forwarder keeps the near side
    open, as a router would: only the database's own timeouts end such a session."""

    def __init__(self, listen_host: str, target_port: int) -> None:
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="forwarder", daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, listen_host, 0), self.loop
        ).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            for pipe in pipes:
                pipe.cancel()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class SecondHost:
    """A network namespace joined to this one by a veth pair (HOST_ADDRESS here, NS_ADDRESS there),
    with its own host name for the processes started in it. Needs root."""

    HOST_ADDRESS = "10.213.113.1"
    NS_ADDRESS = "10.213.113.2"
    HOSTNAME = "batchsite-ns"

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.namespace = f"batchsite-scale-{tag}"
        self.host_link, self.ns_link = f"bsh{tag}", f"bsn{tag}"
        self.processes: list[subprocess.Popen] = []

    def create(self) -> None:
        """Raises RuntimeError with the tool's message when the machine forbids namespaces."""
        steps = [
            ("ip", "netns", "add", self.namespace),
            ("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.ns_link),
            ("ip", "link", "set", self.ns_link, "netns", self.namespace),
            ("ip", "addr", "add", f"{self.HOST_ADDRESS}/30", "dev", self.host_link),
            ("ip", "link", "set", self.host_link, "up"),
            ("ip", "netns", "exec", self.namespace, "ip", "addr", "add", f"{self.NS_ADDRESS}/30", "dev", self.ns_link),
            ("ip", "netns", "exec", self.namespace, "ip", "link", "set", self.ns_link, "up"),
            ("ip", "netns", "exec", self.namespace, "ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            result = run(*step)
            if result.returncode != 0:
                self.close()
                raise RuntimeError(f"{' '.join(step)}: {result.stderr.strip()}")

    def start(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        """Run `command` in the namespace under the second host's name (its own UTS namespace)."""
        wrapper = ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", "-c"]
        script = f'hostname {self.HOSTNAME} && exec "$@"'
        with open(log, "w") as output:
            process = subprocess.Popen(
                [*wrapper, script, "sh", *command],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def cut(self) -> None:
        result = run("ip", "link", "set", self.host_link, "down")
        assert result.returncode == 0, result.stderr

    def restore(self) -> None:
        result = run("ip", "link", "set", self.host_link, "up")
        assert result.returncode == 0, result.stderr

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                stop_process(process, grace=1)
        # Anything else still running in the namespace.
        pids = run("ip", "netns", "pids", self.namespace).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", self.namespace)  # takes the namespace's end of the pair with it
        run("ip", "link", "del", self.host_link)


class Daphne:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(self.port)]
                + ["batchsite.asgi:application"],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self) -> None:
        wait_for_port("127.0.0.1", self.port, self.process)

    def close(self) -> None:
        stop_process(self.process)


NGINX_CONF = """
user root;
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
    upstream batchsite_web {{ {servers} }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://batchsite_web;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_read_timeout 300s;
            # Which daphne answered: the test checks the pages are spread over both.
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """nginx (Debian's) in front of daphne processes, round robin, WebSockets passed through."""

    def __init__(self, upstream_ports: list[int], directory: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        servers = " ".join(f"server 127.0.0.1:{port};" for port in upstream_ports)
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, servers=servers, port=self.port))
        with open(directory / "nginx.log", "w") as output:
            self.process = subprocess.Popen(
                [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "nginx-error.log")],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port("127.0.0.1", self.port, self.process)

    def close(self) -> None:
        stop_process(self.process)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (shutil.which("nginx", path="/usr/sbin:/sbin"))
