"""The audit log: one record per change, written with it (a refused or failed change leaves none),
saying who, which team, what, on which object, from which surface; who may read which records."""

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from jobs import services
from jobs.audit import tick
from jobs.audit.models import AuditRecord
from jobs.errors import IllegalTransition
from jobs.models import Batch, BatchStatus
from jobs.schedules import services as schedule_services
from jobs.schedules import tick as schedule_tick
from jobs.teams import services as team_services
from jobs.teams.models import Role


@pytest.fixture
def team(db, redis_clean):
    ada = User.objects.create_user("ada", "ada@example.com", "ada-password")
    vera = User.objects.create_user("vera", "vera@example.com", "vera-password")
    data = team_services.team_create(name="Data", by=ada)
    team_services.membership_set(team=data, user=vera, role=Role.VIEWER, by=ada)
    return data


def streamed(response) -> str:
    return b"".join(response.streaming_content).decode()


def actions() -> list[str]:
    return list(AuditRecord.objects.order_by("id").values_list("action", flat=True))


def test_every_kind_of_change_is_recorded_once(team, tmp_path):
    ada = User.objects.get(username="ada")
    AuditRecord.objects.all().delete()
    batch = services.batch_create(owner=ada, team=team, type="noop", name="b", items=["a", "b"], start=False)
    services.batch_start(batch=batch)
    services.batch_pause(batch=batch, by=ada)
    services.batch_resume(batch=batch, by=ada)
    services.batch_add_operations(batch_id=batch.pk, items=["c"], by=ada)
    services.batch_cancel(batch=batch, by=ada)
    services.batch_delete(batch=Batch.objects.get(pk=batch.pk), by=ada)
    template = schedule_services.template_create(owner=ada, team="data", name="t", type="noop", items=["a"])
    schedule_services.template_update(template=template, description="nightly")
    schedule = schedule_services.schedule_create(template=template, cron="0 3 * * *")
    schedule_services.schedule_set_enabled(schedule=schedule, enabled=False)
    schedule_services.schedule_delete(schedule=schedule)
    schedule_services.template_delete(template=template)
    instance = services.instance_create(name="db1", url=f"sqlite:///{tmp_path / 'x.db'}", owner=ada, by=ada, team=team)
    services.instance_update(instance=instance, region="eu", by=ada)
    services.instance_test_connection(instance=instance)
    services.instance_remove(name="db1")
    token, _ = services.token_create(user=ada, name="ci", scope="read")
    services.token_revoke(token=token)
    team_services.membership_set(team=team, user="vera", role=Role.OPERATOR, by=ada)
    team_services.membership_remove(team=team, user="vera", by=ada)
    assert actions() == [
        "batch.create",
        "batch.pause",
        "batch.resume",
        "batch.add_items",
        "batch.cancel",
        "batch.delete",
        "template.create",
        "template.update",
        "schedule.create",
        "schedule.update",
        "schedule.delete",
        "template.delete",
        "instance.create",
        "instance.update",
        "instance.test",
        "instance.remove",
        "token.create",
        "token.revoke",
        "membership.set",
        "membership.remove",
    ]
    first = AuditRecord.objects.order_by("id").first()
    assert first is not None
    assert (first.actor_name, first.team, first.surface, first.object_type, first.object_id) == (
        "ada",
        team,
        "system",
        "batch",
        str(batch.pk),
    )
    assert AuditRecord.objects.filter(action="membership.set").get().summary == "vera: viewer → operator"


def test_a_refused_change_leaves_no_record(team):
    ada = User.objects.get(username="ada")
    batch = services.batch_create(owner=ada, team=team, type="noop", name="b", items=["a"], start=False)
    before = AuditRecord.objects.count()
    with pytest.raises(IllegalTransition):
        services.batch_pause(batch=batch, by=ada)  # not started: nothing to pause
    assert AuditRecord.objects.count() == before


def test_pages_the_api_with_its_token_the_command_line_and_schedules_say_which_surface(team):
    ada = User.objects.get(username="ada")
    page = Client()
    page.force_login(ada)
    batch = services.batch_create(owner=ada, team=team, type="noop", name="b", items=["a", "b"], start=False)
    services.batch_start(batch=batch)
    page.post(f"/batches/{batch.pk}/pause/")
    _, key = services.token_create(user=ada, name="deploy bot", scope="operate")
    Client(HTTP_AUTHORIZATION=f"Bearer {key}").post(f"/api/batches/{batch.pk}/resume")
    call_command("batch", "cancel", str(batch.pk), stdout=io.StringIO(), stderr=io.StringIO())
    template = schedule_services.template_create(owner=ada, team=team, name="t", type="noop", items=["a"])
    schedule = schedule_services.schedule_create(template=template, cron="* * * * *", missed="run_once")
    schedule.__class__.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(seconds=5))
    schedule_tick.run()
    rows = {
        action: (surface, actor, token)
        for action, surface, actor, token in AuditRecord.objects.values_list(
            "action", "surface", "actor_name", "token_name"
        )
    }
    assert rows["batch.pause"] == ("page", "ada", "")
    assert rows["batch.resume"] == ("api", "ada", "deploy bot")
    assert rows["batch.cancel"] == ("cli", "", "")
    assert AuditRecord.objects.filter(action="batch.create", surface="schedule").count() == 1


def test_sign_ins_and_lock_outs_are_recorded(team, settings):
    settings.AXES_FAILURE_LIMIT = 2
    client = Client()
    assert client.post("/accounts/login/", {"username": "ada", "password": "ada-password"}).status_code == 302
    assert AuditRecord.objects.filter(action="user.sign_in", actor_name="ada", surface="page").count() == 1
    for _ in range(2):
        Client().post("/accounts/login/", {"username": "vera", "password": "wrong"})
    assert AuditRecord.objects.filter(action="user.lock_out", object_id="vera").count() == 1


def test_admins_read_their_teams_records_others_only_their_own(team, alice):
    ada, vera = User.objects.get(username="ada"), User.objects.get(username="vera")
    services.batch_create(owner=ada, team=team, type="noop", name="team's", items=["a"], start=False)
    services.batch_create(owner=alice, type="noop", name="alice's", items=["a"], start=False)
    reader = Client()
    reader.force_login(ada)
    seen = reader.get("/api/audit?action=batch").json()
    assert [row["summary"].split(":")[0] for row in seen["items"]] == ["team's"]
    assert seen["items"][0]["team"] == "data"
    reader.force_login(vera)
    assert reader.get("/api/audit?action=batch.create").json()["count"] == 0
    reader.force_login(alice)
    assert reader.get("/api/audit?actor=alice&action=batch").json()["count"] == 1
    assert reader.get("/api/audit?actor=alice&action=user.sign_in").json()["count"] == 1
    assert reader.get("/api/audit?since=not-a-date").status_code == 422
    csv = streamed(reader.get("/api/audit.csv?action=batch"))
    assert csv.splitlines()[0].startswith("at,actor,team,surface") and "alice's" in csv
    page = reader.get("/audit/?action=batch")
    assert page.status_code == 200 and "alice&#x27;s" in page.content.decode()


def test_old_records_are_deleted_after_the_retention(team):
    AuditRecord.objects.update(at=timezone.now() - timedelta(days=400))
    services.batch_create(owner=User.objects.get(username="ada"), type="noop", name="new", items=["a"], start=False)
    assert tick.prune(365) > 0
    assert actions() == ["batch.create"]
    assert Batch.objects.get().status == BatchStatus.PENDING
