"""The deployment recipe (deploy/): production settings, JSON logs, the health check, the compose
file and the systemd units, checked with the tools that run them where this machine has them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def production_env() -> dict[str, str]:
    """deploy/production.env.example as the environment of a process (no other Batchsite settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHSITE_", "DJANGO_"))}
    for line in (DEPLOY / "production.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    env.pop("DATABASE_URL", None)
    env["BATCHSITE_VAR_DIR"] = str(ROOT / "var")
    env["DJANGO_SETTINGS_MODULE"] = "batchsite.settings"
    return env


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_check_deploy_is_clean_with_the_documented_production_environment():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("unset", "extra", "error"),
    [
        ("ALLOWED_HOSTS", {}, "ALLOWED_HOSTS must be set when DEBUG is off"),
        ("", {"LOG_FORMAT": "xml"}, "LOG_FORMAT must be text or json, got 'xml'"),
        ("", {"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS must be a int, got 'a year'"),
        ("", {"CSRF_TRUSTED_ORIGINS": "batches.example.com"}, "CSRF_TRUSTED_ORIGINS entries start with https://"),
    ],
)
def test_a_bad_production_setting_stops_start_up_with_a_clear_error(unset, extra, error):
    env = production_env() | extra
    env.pop(unset, None)
    result = run_python("import batchsite.settings", env)
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {error}" in result.stderr


def test_production_without_a_key_stops_start_up_and_makes_none(tmp_path):
    env = production_env() | {"BATCHSITE_VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY")
    result = run_python("import batchsite.settings", env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_production_without_secret_key_reads_the_key_file(tmp_path):
    (tmp_path / "secret_key").write_text("the-installation-key\n")
    env = production_env() | {"BATCHSITE_VAR_DIR": str(tmp_path)}
    env.pop("SECRET_KEY")
    result = run_python("from django.conf import settings; print(settings.SECRET_KEY)", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the-installation-key"


def test_logs_are_json_lines_on_stdout():
    code = (
        "import django; django.setup(); import logging; "
        "logging.getLogger('jobs.engine').warning('worker %s lost', 'w1', extra={'batch_id': 'b1'})"
    )
    result = run_python(code, production_env())
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["message"] == "worker w1 lost" and line["level"] == "WARNING" and line["logger"] == "jobs.engine"
    assert line["batch_id"] == "b1" and line["time"].endswith("+00:00")


def test_the_liveness_check_answers_without_sign_in_and_without_the_database(client):
    # No `db` fixture: a query here would fail the test.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_the_readiness_check_names_the_database_redis_and_migrations(client, db, redis_clean):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok", "migrations": "ok"}


def test_the_readiness_check_is_a_503_naming_redis_when_it_does_not_answer(client, db, settings):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.RQ_QUEUES}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["redis"] == "ConnectionError" and response.json()["database"] == "ok"


def test_the_readiness_check_is_a_503_while_a_migration_is_not_applied(client, db, redis_clean, monkeypatch):
    from django.db.migrations.recorder import MigrationRecorder

    from jobs.web import views

    monkeypatch.setattr(views, "_migrated", False)
    newest = MigrationRecorder.Migration.objects.filter(app="jobs").order_by("-id").first()
    newest.delete()  # inside the test's transaction: rolled back after it
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["migrations"] == "1 pending"


def test_the_compose_file_runs_every_service_with_health_checks_and_restarts():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "proxy"} <= set(services)
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service and service["restart"] == "unless-stopped", name
    assert services["worker"]["stop_signal"] == "SIGTERM"
    grace = int(production_env()["BATCHSITE_STOP_GRACE_S"])
    assert int(services["worker"]["stop_grace_period"].rstrip("s")) > grace
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_docker_compose_accepts_the_compose_file(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed here (no compose plugin): deploy/compose.yaml not validated")
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    shutil.copy(DEPLOY / "production.env.example", tmp_path / "deploy" / "production.env")
    result = subprocess.run(
        [docker, "compose", "-f", str(tmp_path / "deploy" / "compose.yaml"), "config", "--quiet"],
        env={**os.environ, "POSTGRES_PASSWORD": "check"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_systemd_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here: deploy/systemd/ not verified")
    # The units name /srv/batchsite; verify checks that the programs exist, so point them here.
    for unit in (DEPLOY / "systemd").iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/srv/batchsite", str(ROOT)))
    units = ["batchsite.target", "batchsite-setup.service", "batchsite-web.service", "batchsite-worker@1.service"]
    result = subprocess.run(
        [analyze, "verify", "--man=no", *units], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
