"""Teams and roles: the one rule (jobs.teams.access), what it lets each role do, and the services
that keep a team's members (the last admin stays)."""

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied

from jobs import selectors, services
from jobs.errors import BatchNotFound, InvalidInput, UnknownReference
from jobs.models import Batch, DatabaseInstance
from jobs.schedules import services as schedule_services
from jobs.schedules.models import BatchTemplate, Schedule
from jobs.teams import access
from jobs.teams import services as team_services
from jobs.teams.models import Membership, Role


@pytest.fixture
def team(db):
    """Team "data": admin ada, operator otto, viewer vera; bob is in team "other"."""
    ada = User.objects.create_user("ada", password="x")
    otto = User.objects.create_user("otto", password="x")
    vera = User.objects.create_user("vera", password="x")
    data = team_services.team_create(name="Data", by=ada)
    team_services.membership_set(team=data, user=otto, role=Role.OPERATOR, by=ada)
    team_services.membership_set(team=data, user=vera, role=Role.VIEWER, by=ada)
    return data


def user(name: str) -> User:
    return User.objects.get(username=name)


def test_each_role_may_do_what_it_says_on_a_teams_batch(team, bob):
    batch = services.batch_create(owner=user("otto"), team="data", type="noop", name="b", items=["a"], start=False)
    expected = {
        "ada": {"view", "operate", "manage"},
        "otto": {"view", "operate"},
        "vera": {"view"},
        "bob": set(),
    }
    for name, allowed in expected.items():
        assert {action for action in access.ACTIONS if access.can(user(name), action, batch)} == allowed, name
        assert Batch.objects.visible_to(user(name)).filter(pk=batch.pk).exists() == ("view" in allowed)


def test_a_teams_batch_outlives_the_member_who_made_it(team):
    batch = services.batch_create(owner=user("otto"), team=team, type="noop", name="b", items=["a"], start=False)
    team_services.membership_remove(team=team, user="otto", by=user("ada"))
    assert not access.can(user("otto"), "view", batch)
    assert access.can(user("ada"), "manage", batch)


def test_a_viewer_cannot_create_a_teams_batch_and_an_outsider_does_not_learn_the_team(team, bob):
    with pytest.raises(PermissionDenied, match="Your role in team Data is viewer"):
        services.batch_create(owner=user("vera"), team="data", type="noop", name="b", items=["a"])
    with pytest.raises(UnknownReference):
        services.batch_create(owner=bob, team="data", type="noop", name="b", items=["a"])
    with pytest.raises(UnknownReference):
        services.batch_create(owner=bob, team="nope", type="noop", name="b", items=["a"])
    assert Batch.objects.count() == 0


def test_a_viewer_gets_a_403_with_the_role_it_takes_and_an_outsider_a_404(team, bob):
    batch = services.batch_create(owner=user("otto"), team=team, type="noop", name="b", items=["a"], start=False)
    with pytest.raises(PermissionDenied, match="operator or admin"):
        selectors.batch_get_visible(user("vera"), batch.pk, "operate")
    with pytest.raises(PermissionDenied, match="admin"):
        selectors.batch_get_visible(user("otto"), batch.pk, "manage")
    with pytest.raises(BatchNotFound):
        selectors.batch_get_visible(bob, batch.pk)


def test_personal_objects_stay_their_owners_and_staff_see_everything(team, alice, bob, staff):
    batch = services.batch_create(owner=alice, type="noop", name="b", items=["a"], start=False)
    assert access.can(alice, "manage", batch)
    assert not access.can(bob, "view", batch) and not access.can(user("ada"), "view", batch)
    assert access.can(staff, "manage", batch)
    assert Batch.objects.visible_to(None).count() == 0
    assert selectors.batches_visible_to(None).count() == 1


def test_a_teams_batch_may_use_only_the_teams_and_the_shared_instances(team, alice):
    services.instance_create(name="team-db", url="sqlite:////tmp/t.db", owner=user("ada"), by=user("ada"), team=team)
    services.instance_create(name="alices-db", url="sqlite:////tmp/a.db", owner=alice, by=alice)
    services.instance_create(name="everyones-db", url="sqlite:////tmp/e.db", owner=None, shared=True)
    assert set(DatabaseInstance.objects.usable_by(user("otto"), team).values_list("name", flat=True)) == {
        "team-db",
        "everyones-db",
    }
    assert set(DatabaseInstance.objects.visible_to(user("vera")).values_list("name", flat=True)) == {
        "team-db",
        "everyones-db",
    }
    assert not DatabaseInstance.objects.visible_to(user("vera"), "operate").filter(name="team-db").exists()
    assert not DatabaseInstance.objects.visible_to(user("otto"), "manage").exists()
    with pytest.raises(InvalidInput) as refused:
        services.batch_create(
            owner=alice, team=None, type="sql.workflow", name="b", items=["team-db"], params={"query": "select 1"}
        )
    assert "items[0].label" in refused.value.errors
    with pytest.raises(PermissionDenied):
        selectors.instance_get_editable(user("otto"), "team-db")
    assert selectors.instance_get_editable(user("ada"), "team-db").name == "team-db"


def test_templates_and_schedules_of_a_team_follow_the_roles(team):
    with pytest.raises(PermissionDenied):
        schedule_services.template_create(owner=user("otto"), team="data", name="t", type="noop", items=["a"])
    template = schedule_services.template_create(owner=user("ada"), team="data", name="t", type="noop", items=["a"])
    schedule = schedule_services.schedule_create(template=template, cron="0 * * * *")
    assert access.can(user("otto"), "operate", template) and not access.can(user("otto"), "manage", schedule)
    assert Schedule.objects.visible_to(user("vera")).get() == schedule
    assert BatchTemplate.objects.visible_to(user("vera"), "operate").count() == 0
    run = schedule_services.template_run(template=template, by=user("otto"), start=False)
    assert (run.batch.team_id, run.batch.owner.username) == (team.pk, "otto")


def test_the_last_admin_cannot_leave_or_step_down(team):
    ada = user("ada")
    with pytest.raises(InvalidInput, match="A team needs an admin"):
        team_services.membership_remove(team=team, user=ada, by=ada)
    with pytest.raises(InvalidInput, match="A team needs an admin"):
        team_services.membership_set(team=team, user=ada, role=Role.OPERATOR, by=ada)
    team_services.membership_set(team=team, user="otto", role=Role.ADMIN, by=ada)
    team_services.membership_set(team=team, user=ada, role=Role.VIEWER, by=ada)
    assert Membership.objects.get(user=ada).role == Role.VIEWER


def test_only_a_teams_admins_change_its_members(team, bob):
    with pytest.raises(PermissionDenied):
        team_services.membership_set(team=team, user=bob, role=Role.ADMIN, by=user("otto"))
    with pytest.raises(PermissionDenied):
        team_services.membership_remove(team=team, user="vera", by=user("otto"))
    assert not Membership.objects.filter(user=bob).exists()
    team_services.membership_remove(team=team, user="vera", by=user("vera"))  # a member may leave
    assert not Membership.objects.filter(user__username="vera").exists()


def run_command(*args: str) -> str:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("batch", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_line_creates_a_teams_batch_for_an_operator_and_refuses_a_viewer(team, redis_clean):
    from django.core.management import CommandError

    assert "Created batch" in run_command("create", "--type", "noop", "--item", "a", "--user", "otto", "--team", "data")
    assert Batch.objects.get().team == team
    with pytest.raises(CommandError, match="Your role in team Data is viewer") as refused:
        run_command("create", "--type", "noop", "--item", "a", "--user", "vera", "--team", "data")
    assert refused.value.returncode == 2
    with pytest.raises(CommandError, match="No such team") as unknown:
        run_command("create", "--type", "noop", "--item", "a", "--user", "otto", "--team", "nope")
    assert unknown.value.returncode == 2
    assert Batch.objects.count() == 1
    listed = run_command("list", "--team", "data", "--json")
    assert '"team": "data"' in listed


def test_the_team_page_shows_members_and_refuses_to_remove_the_last_admin(team, client):
    client.force_login(user("ada"))
    page = client.get("/teams/data/")
    assert page.status_code == 200
    assert all(name in page.content.decode() for name in ("ada", "otto", "vera"))
    refused = client.post("/teams/data/members/ada/remove/")
    assert refused.status_code == 422 and "last admin" in refused.content.decode()
    assert Membership.objects.filter(user__username="ada", role=Role.ADMIN).exists()
    client.force_login(user("vera"))
    forbidden = client.post("/teams/data/members/otto/role/", {"role": "viewer"})
    assert forbidden.status_code == 403 and "Your role in team Data is viewer" in forbidden.content.decode()
    assert client.get("/teams/nope/").status_code == 404


def test_the_api_answers_403_with_detail_and_refuses_to_demote_the_last_admin(team, client):
    client.force_login(user("ada"))
    demote = client.patch("/api/teams/data/members/ada", {"role": "viewer"}, content_type="application/json")
    assert demote.status_code == 422 and "last admin" in demote.json()["errors"]["role"][0]
    client.force_login(user("otto"))
    refused = client.post("/api/teams/data/members", {"user": "bob", "role": "admin"}, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Your role in team Data is operator; it takes admin to change team Data."
    assert client.get("/api/teams/nope").status_code == 404
    members = client.get("/api/teams/data/members").json()
    assert {(m["user"], m["role"]) for m in members} == {("ada", "admin"), ("otto", "operator"), ("vera", "viewer")}


def test_the_history_and_the_api_filter_by_team(team, client):
    mine = services.batch_create(owner=user("otto"), type="noop", name="own", items=["a"], start=False)
    shared = services.batch_create(owner=user("otto"), team=team, type="noop", name="shared", items=["a"], start=False)
    client.force_login(user("otto"))
    assert [b["id"] for b in client.get("/api/batches?team=data").json()["items"]] == [str(shared.pk)]
    assert [b["id"] for b in client.get("/api/batches?team=me").json()["items"]] == [str(mine.pk)]
    assert client.get("/api/batches?team=nope").status_code == 404
    page = client.get("/batches/?team=data").content.decode()
    assert "shared" in page and ">own<" not in page and "(team Data)" in page


def test_the_tokens_page_creates_a_scoped_team_token_shows_its_key_once_and_revokes_it(team, client):
    from jobs.models import ApiToken
    from jobs.services import tokens

    client.force_login(user("vera"))
    created = client.post("/tokens/", {"name": "dashboards", "scope": "read", "owner-owner": "data"})
    assert created.status_code == 201
    token = ApiToken.objects.get()
    assert (token.user.username, token.scope, token.team) == ("vera", "read", team)
    import re

    found = re.search(r"bst_[\w-]+", created.content.decode())
    assert found is not None
    key = found.group(0)
    assert tokens.token_authenticate(key) == token
    assert key not in client.get("/tokens/").content.decode()
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert not token.is_active
    client.force_login(user("otto"))
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 404


def test_the_command_line_creates_a_teams_template_for_its_admin_only(team):
    run_command("template", "create", "nightly", "--type", "noop", "--item", "a", "--user", "ada", "--team", "data")
    assert BatchTemplate.objects.get().team == team
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="it takes admin") as refused:
        run_command("template", "create", "other", "--type", "noop", "--item", "a", "--user", "otto", "--team", "data")
    assert refused.value.returncode == 2


def test_a_team_reference_of_a_digit_that_is_not_ascii_is_a_404_not_a_500(client, alice):
    client.force_login(alice)
    for reference in ("%C2%B3", "%D9%A3"):  # "³" (a digit to str.isdigit) and an Arabic-Indic three
        assert client.get(f"/api/teams/{reference}").status_code == 404
        assert client.get(f"/api/teams/{reference}/members").status_code == 404
