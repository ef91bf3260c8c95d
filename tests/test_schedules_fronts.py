"""Templates and schedules through their fronts: the JSON API, the pages and `manage.py batch`;
per-user isolation everywhere (another user's template or schedule is a 404)."""

import io
import json
import re

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from jobs import services as core_services
from jobs.models import Batch, BatchStatus
from jobs.schedules import services, tick
from jobs.schedules.models import BatchTemplate, Schedule, TemplateRun
from jobs.services import tokens
from tests.test_schedules import at, make_template

# What the run and template forms post when their fields are left as prefilled.
FORM = {
    "params-duration_ms": "10",
    "params-failure_rate": "0",
    "params-fail_attempts": "0",
    "max_parallel": "4",
    "max_retries": "0",
    "retry_backoff_s": "1",
    "timeout_s": "300",
    "priority": "default",
}


@pytest.fixture
def as_alice(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def alice_api(alice) -> Client:
    _, key = tokens.token_create(user=alice, name="t")
    return Client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
def bob_api(bob) -> Client:
    _, key = tokens.token_create(user=bob, name="t")
    return Client(headers={"Authorization": f"Bearer {key}"})


def post(client: Client, url: str, body: dict):
    return client.post(url, json.dumps(body), content_type="application/json")


def patch(client: Client, url: str, body: dict):
    return client.patch(url, json.dumps(body), content_type="application/json")


# --- API --------------------------------------------------------------------------------------


def test_api_creates_lists_and_runs_a_template_with_overrides(alice_api, alice):
    response = post(
        alice_api,
        "/api/templates",
        {
            "name": "nightly",
            "type": "demo.sleep",
            "name_pattern": "{template} #{n}",
            "items": ["a", "b", {"label": "c", "params": {"duration_ms": 5}}],
            "params": {"duration_ms": 10},
            "options": {"max_parallel": 2},
        },
    )
    assert response.status_code == 201, response.content
    template = response.json()
    assert template["owner"] == "alice" and template["run_count"] == 0
    assert template["items"][2] == {"label": "c", "params": {"duration_ms": 5}}
    listing = alice_api.get("/api/templates").json()
    assert listing["count"] == 1 and listing["items"][0]["id"] == template["id"]

    response = post(
        alice_api,
        f"/api/templates/{template['id']}/run",
        {"params": {"failure_rate": 0.25}, "options": {"max_parallel": 1}, "items": ["c", "b"]},
    )
    assert response.status_code == 201, response.content
    run = response.json()
    assert run["number"] == 1 and run["trigger"] == "manual"
    assert run["batch"]["name"] == "nightly #1" and run["batch"]["total"] == 2
    assert run["batch"]["max_parallel"] == 1 and run["batch"]["params"]["failure_rate"] == 0.25
    batch = Batch.objects.get(pk=run["batch"]["id"])
    assert list(batch.operations.values_list("label", "params")) == [("c", {"duration_ms": 5}), ("b", {})]
    runs = alice_api.get(f"/api/templates/{template['id']}/runs").json()
    assert runs["count"] == 1 and runs["items"][0]["batch_id"] == str(batch.pk)


def test_api_run_overrides_the_type_rejects_are_422_with_paths_and_create_nothing(alice_api, alice):
    template = make_template(alice)
    response = post(
        alice_api,
        f"/api/templates/{template.pk}/run",
        {"params": {"duration_ms": "slow"}, "options": {"max_parallel": 0}},
    )
    assert response.status_code == 422
    assert {"options.max_parallel"} <= set(response.json()["errors"])
    response = post(alice_api, f"/api/templates/{template.pk}/run", {"params": {"duration_ms": "slow"}})
    assert response.status_code == 422 and "params.duration_ms" in response.json()["errors"]
    response = post(alice_api, f"/api/templates/{template.pk}/run", {"items": ["nope"]})
    assert response.status_code == 422 and "items[0]" in response.json()["errors"]
    assert Batch.objects.count() == 0


def test_api_templates_and_schedules_of_another_user_are_404(alice_api, bob_api, alice, bob):
    template = make_template(alice)
    schedule = services.schedule_create(template=template, cron="0 6 * * *", timezone="Europe/Paris")
    assert bob_api.get("/api/templates").json()["count"] == 0
    assert bob_api.get("/api/schedules").json()["count"] == 0
    for method, url in [
        ("get", f"/api/templates/{template.pk}"),
        ("delete", f"/api/templates/{template.pk}"),
        ("get", f"/api/templates/{template.pk}/runs"),
        ("get", f"/api/schedules/{schedule.pk}"),
        ("delete", f"/api/schedules/{schedule.pk}"),
    ]:
        assert getattr(bob_api, method)(url).status_code == 404, url
    assert post(bob_api, f"/api/templates/{template.pk}/run", {}).status_code == 404
    assert patch(bob_api, f"/api/templates/{template.pk}", {"name": "mine"}).status_code == 404
    assert patch(bob_api, f"/api/schedules/{schedule.pk}", {"enabled": False}).status_code == 404
    # Nor may bob schedule alice's template.
    response = post(bob_api, "/api/schedules", {"template": template.pk, "cron": "* * * * *"})
    assert response.status_code == 404
    assert Batch.objects.count() == 0 and Schedule.objects.count() == 1
    assert alice_api.get(f"/api/templates/{template.pk}").status_code == 200
    assert alice_api.get("/api/templates/99999999999999999999").status_code == 404


def test_api_schedule_crud_describes_the_cron_and_quotes_bad_input(alice_api, alice):
    template = make_template(alice)
    with time_machine.travel(at("2026-03-27 12:00"), tick=False):
        response = post(
            alice_api,
            "/api/schedules",
            {"template": template.pk, "cron": "0 6 * * *", "timezone": "Europe/Paris", "overlap": "queue"},
        )
    assert response.status_code == 201, response.content
    schedule = response.json()
    assert schedule["description"] == "At 06:00 every day (Europe/Paris)"
    assert schedule["overlap"] == "queue" and schedule["missed"] == "skip" and schedule["enabled"] is True
    assert schedule["next_run_at"].startswith("2026-03-28T05:00")
    assert len(schedule["next_runs"]) == 5

    response = patch(alice_api, f"/api/schedules/{schedule['id']}", {"enabled": False})
    assert response.status_code == 200 and response.json()["next_run_at"] is None
    assert response.json()["next_runs"] == []

    response = post(alice_api, "/api/schedules", {"template": template.pk, "cron": "0 25 * * *"})
    assert response.status_code == 422 and "'0 25 * * *'" in response.json()["errors"]["cron"][0]
    response = post(
        alice_api, "/api/schedules", {"template": template.pk, "cron": "0 6 * * *", "timezone": "Moon/Base"}
    )
    assert response.status_code == 422 and "'Moon/Base'" in response.json()["errors"]["timezone"][0]
    response = post(alice_api, "/api/schedules", {"template": template.pk, "cron": "0 6 * * *", "overlap": "sometimes"})
    assert response.status_code == 422 and "overlap" in response.json()["errors"]

    assert alice_api.delete(f"/api/schedules/{schedule['id']}").status_code == 204
    assert Schedule.objects.count() == 0


def test_api_run_again_and_save_as_template_from_a_batch(alice_api, bob_api, alice):
    batch = core_services.batch_create(
        owner=alice, type="demo.sleep", name="once", items=["x", "y"], params={"duration_ms": 3}, max_parallel=2
    )
    response = post(alice_api, f"/api/batches/{batch.pk}/run-again", {})
    assert response.status_code == 201
    again = response.json()
    assert again["id"] != str(batch.pk) and again["total"] == 2 and again["max_parallel"] == 2

    response = post(alice_api, f"/api/batches/{batch.pk}/save-as-template", {"name": "from once"})
    assert response.status_code == 201, response.content
    assert response.json()["items"] == [{"label": "x", "params": {}}, {"label": "y", "params": {}}]
    assert response.json()["options"]["max_parallel"] == 2

    assert post(bob_api, f"/api/batches/{batch.pk}/run-again", {}).status_code == 404
    assert post(bob_api, f"/api/batches/{batch.pk}/save-as-template", {"name": "x"}).status_code == 404
    assert Batch.objects.count() == 2 and BatchTemplate.objects.count() == 1


def test_api_template_with_a_removed_type_fails_at_run_time(alice_api, alice):
    template = make_template(alice)
    BatchTemplate.objects.filter(pk=template.pk).update(type="gone.away")
    response = post(alice_api, f"/api/templates/{template.pk}/run", {})
    assert response.status_code == 422
    assert "gone.away" in response.json()["errors"]["type"][0]
    assert Batch.objects.count() == 0


def test_the_openapi_schema_documents_the_new_endpoints(alice_api):
    paths = alice_api.get("/api/openapi.json").json()["paths"]
    for path in (
        "/api/templates",
        "/api/templates/{template_id}",
        "/api/templates/{template_id}/run",
        "/api/schedules",
        "/api/schedules/{schedule_id}",
        "/api/batches/{batch_id}/run-again",
        "/api/batches/{batch_id}/save-as-template",
    ):
        assert path in paths, path


# --- pages ------------------------------------------------------------------------------------


def test_pages_list_only_the_users_own_templates_and_schedules(as_alice, alice, bob):
    mine = make_template(alice, name="alice-nightly")
    theirs = make_template(bob, name="bob-nightly")
    services.schedule_create(template=mine, cron="0 6 * * mon", timezone="Europe/Paris")
    bobs_schedule = services.schedule_create(template=theirs, cron="0 7 * * *")
    page = as_alice.get("/templates/").content.decode()
    assert "alice-nightly" in page and "bob-nightly" not in page
    page = as_alice.get("/schedules/").content.decode()
    assert "At 06:00 on Monday (Europe/Paris)" in page and "bob-nightly" not in page
    for url in (
        f"/templates/{theirs.pk}/",
        f"/templates/{theirs.pk}/edit/",
        f"/schedules/{bobs_schedule.pk}/",
    ):
        assert as_alice.get(url).status_code == 404, url
    for url in (
        f"/templates/{theirs.pk}/run/",
        f"/templates/{theirs.pk}/delete/",
        f"/schedules/{bobs_schedule.pk}/toggle/",
    ):
        assert as_alice.post(url).status_code == 404, url
    assert Batch.objects.count() == 0 and BatchTemplate.objects.count() == 2


def test_pages_require_login():
    response = Client().get("/templates/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_template_page_runs_it_with_overrides_and_lists_its_runs(as_alice, alice):
    template = make_template(alice)
    page = as_alice.get(f"/templates/{template.pk}/")
    assert page.status_code == 200 and b"No runs yet" in page.content
    response = as_alice.post(
        f"/templates/{template.pk}/run/",
        {**FORM, "only": "a\nc", "params-duration_ms": "20", "max_parallel": "3"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    run = TemplateRun.objects.get()
    assert response["Location"] == f"/batches/{run.batch_id}/"
    assert run.batch.total == 2 and run.batch.max_parallel == 3 and run.batch.params["duration_ms"] == 20
    Batch.objects.filter(pk=run.batch_id).update(status=BatchStatus.PARTIAL_SUCCESS, failed=1, completed=1)
    page = as_alice.get(f"/templates/{template.pk}/").content.decode()
    assert run.batch.name in page and "<svg" in page and "1 failed of 2" in page
    page = as_alice.get(f"/batches/{run.batch_id}/").content.decode()
    assert f'Run #1 of template <a href="/templates/{template.pk}/">nightly</a>' in page


def test_the_template_page_shows_override_errors_next_to_fields_and_runs_nothing(as_alice, alice):
    template = make_template(alice)
    response = as_alice.post(
        f"/templates/{template.pk}/run/",
        {**FORM, "only": "a\nzzz", "max_parallel": "0"},
    )
    assert response.status_code == 422
    assert b"Ensure this value is greater than or equal to 1" in response.content
    assert Batch.objects.count() == 0
    response = as_alice.post(
        f"/templates/{template.pk}/run/",
        {**FORM, "only": "a\nzzz", "max_parallel": "2"},
    )
    assert response.status_code == 422 and b"&#x27;zzz&#x27; is not an item" in response.content
    assert Batch.objects.count() == 0


def test_the_batch_create_form_can_save_a_template_instead(as_alice, alice):
    form = as_alice.get("/batches/new/demo.sleep/").content.decode()
    assert 'formaction="/templates/new/demo.sleep/"' in form
    response = as_alice.post(
        "/templates/new/demo.sleep/",
        {**FORM, "name": "from the form", "items": "a\nb", "params-duration_ms": "50", "max_parallel": "4"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    template = BatchTemplate.objects.get()
    assert (template.name, template.owner) == ("from the form", alice)
    assert template.params == {"duration_ms": 50, "failure_rate": 0.0, "fail_attempts": 0}
    assert [i["label"] for i in template.items] == ["a", "b"]
    assert Batch.objects.count() == 0


def test_the_batch_page_offers_save_as_template_and_it_saves_one(as_alice, alice):
    batch = core_services.batch_create(owner=alice, type="demo.sleep", name="once", items=["x"])
    page = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert f'href="/templates/from-batch/{batch.pk}/"' in page
    response = as_alice.post(f"/templates/from-batch/{batch.pk}/", {"name": "keep it"})
    assert response.status_code == 302
    assert BatchTemplate.objects.get().name == "keep it"
    response = as_alice.post(f"/templates/from-batch/{batch.pk}/", {"name": "keep it"})
    assert response.status_code == 422 and b"already have a template" in response.content


def test_the_schedule_form_quotes_a_bad_cron_and_zone(as_alice, alice):
    template = make_template(alice)
    response = as_alice.post(
        "/schedules/",
        {
            "template": template.pk,
            "cron": "0 6 * * funday",
            "timezone": "Paris",
            "overlap": "skip",
            "missed": "skip",
            "enabled": "on",
        },
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert "0 6 * * funday" in body and "&#x27;Paris&#x27;" in body
    assert Schedule.objects.count() == 0
    response = as_alice.post(
        "/schedules/",
        {
            "template": template.pk,
            "cron": "0 6 * * mon",
            "timezone": "Europe/Paris",
            "overlap": "skip",
            "missed": "skip",
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    schedule = Schedule.objects.get()
    page = as_alice.get(f"/schedules/{schedule.pk}/").content.decode()
    assert "At 06:00 on Monday (Europe/Paris)" in page
    assert len(re.findall(r"<li>Mon \d+ \w+ \d{4} 06:00 CES?T</li>", page)) == 5
    preview = as_alice.get("/schedules/preview/", {"cron": "*/5 * * * *", "timezone": "UTC"}).content.decode()
    assert "Every fifth minute" in preview
    as_alice.post(f"/schedules/{schedule.pk}/toggle/")
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None


# --- command line -----------------------------------------------------------------------------


def batch_command(*args) -> str:
    out = io.StringIO()
    call_command("batch", *[str(arg) for arg in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args) -> str:
    with pytest.raises(CommandError) as caught:
        batch_command(*args)
    assert caught.value.returncode == 2, caught.value
    return str(caught.value)


def test_cli_creates_runs_and_schedules_a_template(alice):
    output = batch_command(
        "template",
        "create",
        "nightly",
        "--type",
        "demo.sleep",
        "--item",
        "a",
        "--item",
        "b",
        "--param",
        "duration_ms=10",
        "--option",
        "max_parallel=1",
        "--user",
        "alice",
    )
    assert "Created template" in output
    output = batch_command("template", "run", "nightly", "--param", "duration_ms=30", "--only", "b", "--user", "alice")
    batch = Batch.objects.get()
    assert str(batch.pk) in output and batch.total == 1 and batch.params["duration_ms"] == 30
    assert batch.max_parallel == 1 and batch.owner == alice
    assert "nightly" in batch_command("template", "list")
    assert "#1" in batch_command("template", "show", "nightly")

    output = batch_command("schedule", "add", "nightly", "0 6 * * mon", "--timezone", "Europe/Paris", "--user", "alice")
    schedule = Schedule.objects.get()
    assert "At 06:00 on Monday (Europe/Paris)" in output and output.count("next: Mon") == 5
    assert "enabled" in batch_command("schedule", "list")
    batch_command("schedule", "disable", schedule.pk)
    schedule.refresh_from_db()
    assert not schedule.enabled
    batch_command("schedule", "enable", schedule.pk)
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at is not None


def test_cli_refuses_bad_input_with_exit_code_2(alice):
    make_template(alice)
    assert "'61 * * * *'" in refused("schedule", "add", "nightly", "61 * * * *")
    assert "'Nowhere/Land'" in refused("schedule", "add", "nightly", "0 6 * * *", "--timezone", "Nowhere/Land")
    assert "params.duration_ms" in refused("template", "run", "nightly", "--param", "duration_ms=slow")
    assert "No template" in refused("template", "run", "weekly")
    assert "No schedule" in refused("schedule", "enable", 4242)
    assert Batch.objects.count() == Schedule.objects.count() == 0


def test_cli_saves_a_batch_as_template_and_runs_a_batch_again(alice):
    batch = core_services.batch_create(owner=alice, type="demo.sleep", name="once", items=["x", "y"])
    output = batch_command("template", "save", batch.short_id, "from-cli")
    assert "Saved batch" in output
    assert BatchTemplate.objects.get().owner == alice
    output = batch_command("run-again", batch.short_id)
    assert Batch.objects.count() == 2
    assert "Created batch" in output


@override_settings(BATCH_CREATE_RATE_LIMIT=2, BATCH_CREATE_RATE_WINDOW_S=3600)
def test_api_runs_count_against_the_creation_rate_limit_but_scheduled_runs_do_not(alice_api, alice, redis_clean):
    template = make_template(alice)
    batch = core_services.batch_create(owner=alice, type="demo.sleep", name="once", items=["x"], rate_limit=False)
    assert post(alice_api, f"/api/templates/{template.pk}/run", {}).status_code == 201
    assert post(alice_api, f"/api/batches/{batch.pk}/run-again", {}).status_code == 201
    refused = post(alice_api, f"/api/templates/{template.pk}/run", {})
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 3600
    assert post(alice_api, f"/api/batches/{batch.pk}/run-again", {}).status_code == 429
    assert Batch.objects.count() == 3
    with time_machine.travel(at("2026-03-30 03:00"), tick=False):
        services.schedule_create(template=template, cron="0 6 * * *", timezone="Europe/Paris")
    (fired,) = tick.run(now=at("2026-03-30 04:00:01"))
    assert fired.run is not None and Batch.objects.count() == 4


# --- admin ------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def test_the_admin_lists_templates_schedules_and_runs_and_runs_a_template(admin_client, alice):
    template = make_template(alice)
    schedule = services.schedule_create(template=template, cron="0 6 * * *", timezone="Europe/Paris")
    services.template_run(template=template)
    for url in (
        "/admin/schedules/batchtemplate/",
        f"/admin/schedules/batchtemplate/{template.pk}/change/",
        "/admin/schedules/schedule/",
        f"/admin/schedules/schedule/{schedule.pk}/change/",
        "/admin/schedules/templaterun/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    response = admin_client.post(
        "/admin/schedules/batchtemplate/", {"action": "run_now", "_selected_action": [template.pk]}
    )
    assert response.status_code == 302
    assert TemplateRun.objects.count() == 2


def test_the_admin_schedule_form_quotes_a_bad_cron_and_saves_through_the_service(admin_client, alice):
    template = make_template(alice)
    form = {"template": template.pk, "cron": "0 6 * * *", "timezone": "Atlantis", "overlap": "skip", "missed": "skip"}
    response = admin_client.post("/admin/schedules/schedule/add/", {**form, "enabled": "on"})
    assert response.status_code == 200 and b"&#x27;Atlantis&#x27;" in response.content
    assert Schedule.objects.count() == 0
    response = admin_client.post(
        "/admin/schedules/schedule/add/", {**form, "timezone": "Europe/Paris", "enabled": "on"}
    )
    assert response.status_code == 302
    schedule = Schedule.objects.get()
    assert schedule.next_run_at is not None and schedule.timezone == "Europe/Paris"


# --- secret params ----------------------------------------------------------------------------

SECRET = "Bearer Tpl-5150"


def test_template_secrets_are_stored_encrypted_shown_masked_and_kept_by_edits_and_runs(alice_api, as_alice, alice):
    from jobs import secrets
    from jobs.optypes import get_type

    headers = {"Authorization": SECRET}
    body = {
        "name": "hooks",
        "type": "pipeline.http",
        "items": ["p1", {"label": "p2", "params": {"headers": {"Authorization": "Bearer Item-77"}}}],
        "params": {"url": "https://example.com/run/{label}", "headers": headers},
    }
    answer = post(alice_api, "/api/templates", body)
    assert answer.status_code == 201, answer.content
    assert answer.json()["params"]["headers"] == {"Authorization": "***"}
    assert answer.json()["items"][1]["params"]["headers"] == {"Authorization": "***"}
    template = BatchTemplate.objects.get(pk=answer.json()["id"])
    stored = json.dumps([template.params, template.items])
    assert "Tpl-5150" not in stored and "Item-77" not in stored

    for url in (f"/templates/{template.pk}/", f"/templates/{template.pk}/edit/", f"/api/templates/{template.pk}"):
        text = (as_alice if url.startswith("/templates") else alice_api).get(url).content.decode()
        assert "Tpl-5150" not in text and "Item-77" not in text, url
    shown = io.StringIO()
    call_command("batch", "template", "show", str(template.pk), "--user", "alice", stdout=shown)
    assert "Tpl-5150" not in shown.getvalue() and "***" in shown.getvalue()

    # An edit that sends the masks back (as the prefilled form does) keeps the secrets.
    masked = answer.json()
    response = patch(alice_api, f"/api/templates/{template.pk}", {"params": masked["params"], "items": masked["items"]})
    assert response.status_code == 200, response.content
    # A run with the masked value as an override, as the prefilled run form posts it, too.
    run = services.template_run(template=template, params={"headers": {"Authorization": "***"}}, start=False)
    optype = get_type("pipeline.http")
    assert secrets.reveal_params(optype, run.batch.params)["headers"] == headers
    item_params = run.batch.operations.get(label="p2").params
    assert secrets.reveal_params(optype, item_params)["headers"] == {"Authorization": "Bearer Item-77"}
    # A new value replaces it.
    response = patch(
        alice_api,
        f"/api/templates/{template.pk}",
        {"params": {**body["params"], "headers": {"Authorization": "Bearer New-1"}}},
    )
    assert response.status_code == 200, response.content
    template.refresh_from_db()
    assert secrets.reveal_params(optype, template.params)["headers"] == {"Authorization": "Bearer New-1"}
