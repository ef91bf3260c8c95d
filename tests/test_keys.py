"""One secret key for every process: the key file, the workers' start-up check, and what a
reader of an unreadable secret is told."""

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from batchsite.keyfile import ensure_key, read_key
from jobs import secrets
from jobs.engine import keycheck
from jobs.models import DatabaseInstance
from tests.conftest import ROOT


def test_the_key_file_is_made_once_private_and_then_read(tmp_path):
    path = tmp_path / "var" / "secret_key"
    key = ensure_key(path)
    assert len(key) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_key(path) == key == read_key(path)
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]


def test_processes_making_the_key_at_once_all_get_the_same_one(tmp_path):
    path = tmp_path / "secret_key"
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(ensure_key(path))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 16 and len(set(keys)) == 1 and keys[0] == read_key(path)


def test_a_process_without_secret_key_in_debug_makes_and_reads_the_shared_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHSITE_", "DJANGO_")) and k != "SECRET_KEY"}
    env |= {"BATCHSITE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "batchsite.settings", "DEBUG": "true"}
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first, second = (
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        for _ in range(2)
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == second.stdout.strip() == read_key(tmp_path / "secret_key")


@pytest.mark.django_db
def test_an_unreadable_instance_url_names_the_instance_and_what_to_do(settings):
    instance = DatabaseInstance(name="shop")
    instance.url = "postgresql://reader:pw@db.example.com/shop"
    instance.save()
    settings.SECRET_KEY = "another-key"
    instance.refresh_from_db()
    with pytest.raises(secrets.SecretUnreadable) as caught:
        _ = instance.url
    message = str(caught.value)
    assert "database instance 'shop'" in message and "enter its URL again" in message
    assert "same SECRET_KEY" in message
    assert instance.masked_url.startswith("(unreadable")


def test_an_unreadable_secret_param_names_the_parameter(settings):
    from jobs.optypes import get_type

    optype = get_type("pipeline.http")
    stored = secrets.encrypt_params(optype, {"url": "http://x/{label}", "headers": {"Authorization": "Bearer t"}})
    settings.SECRET_KEY = "another-key"
    with pytest.raises(secrets.SecretUnreadable, match="secret parameter 'headers'"):
        secrets.reveal_params(optype, stored)


@pytest.mark.django_db
def test_the_probe_of_another_key_is_a_problem_and_of_the_same_key_is_not(settings, redis_clean):
    keycheck.write_probe()
    assert keycheck.probe_problem() is None
    settings.SECRET_KEY = "another-key"
    assert "different keys" in (keycheck.probe_problem() or "")


@pytest.mark.workers
def test_a_worker_with_another_key_than_the_web_refuses_to_start_and_says_why(workers):
    keycheck.write_probe()
    workers.env["SECRET_KEY"] = "not-the-web-servers-key"
    (process,) = workers.start(1, wait=False)
    assert process.wait(timeout=60) != 0
    from django.conf import settings

    log = next(Path(settings.VAR_DIR).glob("worker-test_a_worker_with_another_key*-1.log")).read_text()
    assert "started with different keys" in log and "same SECRET_KEY" in log
