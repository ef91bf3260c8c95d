"""End-to-end fixtures: the real web server (daphne through runserver, for static files) and
real RQ workers against the test database, driven by Debian's Chromium through Playwright."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, WorkerPool, database_url_for_subprocess, wait_for

# Playwright's sync API runs an event loop in this thread; the tests' ORM calls are still plain
# sync calls between browser steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(transactional_db, redis_clean):
    """The web server on a free port, against the test database; yields its base URL."""
    from django.conf import settings

    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "PYTHONUNBUFFERED": "1"}
    log = open(Path(settings.VAR_DIR) / "e2e-server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the web server exited; see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_for(answers, 30, 0.1, "the web server to accept connections")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def two_workers(transactional_db, redis_clean):
    pool = WorkerPool()
    pool.start(2)
    yield pool
    pool.stop_all()


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is open,
# which the asyncio tests of other modules cannot share.
@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm: the person says yes
    yield page
    context.close()


@pytest.fixture
def logged_in(page, server, alice):
    """A page logged in as alice through the login form."""
    page.goto(f"{server}/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server}/")
    return page
