"""Who may do what, swept over every page and every API route: viewer, operator and admin of team
alpha, a member of team beta, a plain user and an anonymous visitor each ask every URL (filled in
with team alpha's objects) and get the answer their role allows; a refused request changes nothing.

Each request runs in a savepoint rolled back afterwards, so every role meets the same objects."""

import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from jobs import artifacts, services
from jobs.api.endpoints import api
from jobs.models import Batch, BatchStatus, DatabaseInstance, Limit, Operation, OperationStatus, ResultRow
from jobs.notifications import services as notification_services
from jobs.notifications.models import Delivery, DeliveryStatus, Subscription
from jobs.schedules import services as schedule_services
from jobs.schedules.models import BatchTemplate, Schedule
from jobs.teams import services as team_services
from jobs.teams.models import Membership, Role, Team

ROLES = ("anonymous", "plain", "beta", "viewer", "operator", "admin")
# What each action is allowed to, by role (staff-only and public routes are their own kinds).
ALLOWED = {
    "any": {"plain", "beta", "viewer", "operator", "admin"},
    "view": {"viewer", "operator", "admin"},
    "operate": {"operator", "admin"},
    "manage": {"admin"},
    "staff": set(),
}
# Users who are no member of alpha do not learn that its objects exist.
OUTSIDERS = {"plain", "beta"}


@dataclass
class World:
    users: dict[str, User]
    batch: Batch
    other: Batch
    template: BatchTemplate
    schedule: Schedule
    instance: DatabaseInstance
    subscription: Subscription
    delivery: Delivery
    values: dict[str, str] = field(default_factory=dict)


def finished_batch(owner: User, team: Team, name: str) -> Batch:
    """Partial success: operation 1 completed with rows and a file, operation 2 failed."""
    batch = services.batch_create(owner=owner, team=team, type="demo.sleep", name=name, items=["a", "b"], start=False)
    now = timezone.now() - timedelta(days=2)
    first, second = batch.operations.order_by("seq")
    Operation.objects.filter(pk=first.pk).update(status=OperationStatus.COMPLETED, attempts=1, finished_at=now)
    Operation.objects.filter(pk=second.pk).update(
        status=OperationStatus.FAILED, attempts=1, error="boom", error_type="Boom", finished_at=now
    )
    ResultRow.objects.create(batch=batch, operation=first, data={"n": 1})
    Batch.objects.filter(pk=batch.pk).update(
        status=BatchStatus.PARTIAL_SUCCESS, pending=0, completed=1, failed=1, started_at=now, finished_at=now
    )
    directory = artifacts.operation_dir(str(batch.pk), "op-1")
    (directory / "out.txt").write_text("hello")
    return Batch.objects.get(pk=batch.pk)


@pytest.fixture
def world(db, redis_clean, tmp_path, settings) -> World:
    settings.BATCHSITE_ARTIFACTS_DIR = str(tmp_path / "artifacts")
    names = {"plain": "pat", "beta": "bea", "viewer": "vera", "operator": "otto", "admin": "ada"}
    users = {role: User.objects.create_user(name, f"{name}@example.com", "x") for role, name in names.items()}
    mo = User.objects.create_user("mo", "mo@example.com", "x")
    alpha = team_services.team_create(name="Alpha", by=users["admin"])
    for role, member in ((Role.VIEWER, users["viewer"]), (Role.OPERATOR, users["operator"]), (Role.VIEWER, mo)):
        team_services.membership_set(team=alpha, user=member, role=role, by=users["admin"])
    team_services.team_create(name="Beta", by=users["beta"])
    batch = finished_batch(users["operator"], alpha, "alpha nightly")
    other = finished_batch(users["operator"], alpha, "alpha nightly 2")
    template = schedule_services.template_create(
        owner=users["admin"], team=alpha, name="alpha template", type="noop", items=["a"]
    )
    schedule = schedule_services.schedule_create(template=template, cron="0 3 * * *")
    instance = services.instance_create(
        name="alpha-db", url=f"sqlite:///{tmp_path / 'alpha.db'}", owner=users["admin"], by=users["admin"], team=alpha
    )
    subscription = notification_services.subscription_create(
        owner=users["admin"], team=alpha, channel="email", events=["completed"]
    )
    delivery = Delivery.objects.create(
        batch=batch,
        subscription=subscription,
        channel="email",
        event_name="completed",
        target="ada@example.com",
        status=DeliveryStatus.FAILED,
        give_up_at=timezone.now(),
        finished_at=timezone.now(),
    )
    token, _ = services.token_create(user=users["admin"], name="ada's")
    services.limit_set(key="api:billing", values={"concurrency": 2})
    found = World(users, batch, other, template, schedule, instance, subscription, delivery)
    found.values = {
        "batch_id": str(batch.pk),
        "other_id": str(other.pk),
        "seq": "2",
        "artifact_path": "op-1/out.txt",
        "template_id": str(template.pk),
        "schedule_id": str(schedule.pk),
        "subscription_id": str(subscription.pk),
        "delivery_id": str(delivery.pk),
        "name": instance.name,
        "team": alpha.slug,
        "slug": alpha.slug,
        "username": "mo",
        "type_key": "noop",
        "token_id": str(token.pk),
        "key": "api:billing",
    }
    return found


@dataclass
class Route:
    method: str
    path: str  # with {placeholders}
    action: str
    body: dict | None = None
    # A route whose refusal is not a 403/404: it answers as for anyone, over what the user may change.
    refused_like_any: bool = False
    # How a page refuses when its form offers only what the role allows (a team, a template).
    refusals: frozenset[int] | None = None
    query: str = ""
    # What a token's scope must reach for it when that is more than the route's action (a write
    # that creates a template or a team of one's own).
    scope_action: str = ""


# A create form's owner chooser offers only the teams where the role allows it: another is refused
# with the form's error (422), or with the 403 page's message.
CHOOSER = frozenset({403, 422})

# What a batch form posts besides its name and items: the options as the form fills them in.
OPTIONS = {"max_parallel": "4", "max_retries": "0", "retry_backoff_s": "1", "timeout_s": "300", "priority": "default"}
NEW_BATCH = {"type": "noop", "name": "new", "items": ["x"], "team": "alpha"}
API_ROUTES = [
    Route("POST", "/api/chains", "operate", {"batches": [NEW_BATCH, NEW_BATCH]}),
    Route("GET", "/api/stats", "any"),
    Route("GET", "/api/operation-types", "any"),
    Route("GET", "/api/workers", "staff"),
    Route("POST", "/api/batches", "operate", NEW_BATCH),
    Route("GET", "/api/batches", "any"),
    Route("GET", "/api/batches/{batch_id}", "view"),
    Route("DELETE", "/api/batches/{batch_id}", "manage"),
    Route("GET", "/api/batches/{batch_id}/progress", "view"),
    Route("GET", "/api/batches/{batch_id}/operations", "view"),
    Route("POST", "/api/batches/{batch_id}/operations", "operate", {"items": ["c"], "reopen": True}),
    Route("GET", "/api/batches/{batch_id}/operations/{seq}", "view"),
    Route("POST", "/api/batches/{batch_id}/operations/{seq}/retry", "operate"),
    Route("POST", "/api/batches/{batch_id}/operations/{seq}/cancel", "operate"),
    Route("GET", "/api/batches/{batch_id}/results", "view"),
    Route("GET", "/api/batches/{batch_id}/results.csv", "view"),
    Route("GET", "/api/batches/{batch_id}/operations.csv", "view"),
    Route("GET", "/api/batches/{batch_id}/results.xlsx", "view"),
    Route("GET", "/api/batches/{batch_id}/operations.xlsx", "view"),
    Route("GET", "/api/batches/{batch_id}/results.jsonl", "view"),
    Route("GET", "/api/search", "any", query="?q=ba"),
    # Limits hold for every user's batches: everyone signed in reads them, staff change them.
    Route("GET", "/api/limits", "any"),
    Route("POST", "/api/limits", "staff", {"key": "api:new", "concurrency": 3}),
    Route("GET", "/api/limits/{key}", "any"),
    Route("PUT", "/api/limits/{key}", "staff", {"concurrency": 5}),
    Route("PATCH", "/api/limits/{key}", "staff", {"concurrency": 5}),
    Route("DELETE", "/api/limits/{key}", "staff"),
    # A batch the user may not act on is skipped (named in the answer), not refused as a whole.
    Route("POST", "/api/batches/bulk", "operate", {"action": "pause", "ids": ["{batch_id}"]}, refused_like_any=True),
    Route("POST", "/api/batches/{batch_id}/operations/bulk", "operate", {"action": "retry", "all": True}),
    Route("GET", "/api/batches/{batch_id}/analytics", "view"),
    Route("GET", "/api/batches/{batch_id}/artifacts", "view"),
    Route("GET", "/api/batches/{batch_id}/artifacts/{artifact_path}", "view"),
    Route("POST", "/api/batches/{batch_id}/cancel", "operate"),
    Route("POST", "/api/batches/{batch_id}/pause", "operate"),
    Route("POST", "/api/batches/{batch_id}/resume", "operate"),
    Route("POST", "/api/batches/{batch_id}/retry", "operate"),
    Route("POST", "/api/batches/cleanup", "manage", {"days_to_keep": 0}, refused_like_any=True),
    Route("GET", "/api/batches/{batch_id}/compare/{other_id}", "view"),
    Route("GET", "/api/batches/{batch_id}/compare/{other_id}.csv", "view"),
    Route("GET", "/api/batches/{batch_id}/compare/{other_id}/rows.csv", "view", query="?key=n"),
    Route("GET", "/api/instances", "any"),
    Route("POST", "/api/instances", "manage", {"name": "new-db", "url": "sqlite:////tmp/new.db", "team": "alpha"}),
    Route(
        "POST",
        "/api/instances/import",
        "manage",
        {"rows": [{"name": "new-db", "url": "sqlite:////tmp/new.db"}], "team": "alpha"},
    ),
    Route("GET", "/api/instances/{name}", "view"),
    Route("PATCH", "/api/instances/{name}", "manage", {"region": "eu"}),
    Route("DELETE", "/api/instances/{name}", "manage"),
    Route("POST", "/api/instances/{name}/test", "operate"),
    Route("GET", "/api/subscriptions", "any"),
    Route("POST", "/api/subscriptions", "manage", {"channel": "email", "events": ["failed"], "team": "alpha"}),
    Route("GET", "/api/subscriptions/{subscription_id}", "view"),
    Route("PATCH", "/api/subscriptions/{subscription_id}", "manage", {"active": False}),
    Route("DELETE", "/api/subscriptions/{subscription_id}", "manage"),
    Route("POST", "/api/subscriptions/signing-secret", "any"),
    Route("GET", "/api/batches/{batch_id}/deliveries", "view"),
    Route("POST", "/api/batches/{batch_id}/deliveries/{delivery_id}/resend", "operate"),
    Route("GET", "/api/templates", "any"),
    Route("POST", "/api/templates", "manage", {"name": "new", "type": "noop", "items": ["a"], "team": "alpha"}),
    Route("GET", "/api/templates/{template_id}", "view"),
    Route("PATCH", "/api/templates/{template_id}", "manage", {"description": "changed"}),
    Route("DELETE", "/api/templates/{template_id}", "manage"),
    Route("POST", "/api/templates/{template_id}/run", "operate", {}),
    Route("GET", "/api/templates/{template_id}/runs", "view"),
    Route("POST", "/api/batches/{batch_id}/run-again", "operate"),
    Route("POST", "/api/batches/{batch_id}/save-as-template", "view", {"name": "mine"}, scope_action="manage"),
    Route("GET", "/api/schedules", "any"),
    Route("POST", "/api/schedules", "manage", {"template": "{template_id}", "cron": "0 4 * * *"}),
    Route("GET", "/api/schedules/{schedule_id}", "view"),
    Route("PATCH", "/api/schedules/{schedule_id}", "manage", {"enabled": False}),
    Route("DELETE", "/api/schedules/{schedule_id}", "manage"),
    Route("GET", "/api/teams", "any"),
    Route("POST", "/api/teams", "any", {"name": "Gamma"}, scope_action="manage"),
    Route("GET", "/api/teams/{team}", "view"),
    Route("GET", "/api/teams/{team}/members", "view"),
    Route("POST", "/api/teams/{team}/members", "manage", {"user": "pat", "role": "viewer"}),
    Route("PATCH", "/api/teams/{team}/members/{username}", "manage", {"role": "operator"}),
    Route("DELETE", "/api/teams/{team}/members/{username}", "manage"),
    Route("GET", "/api/audit", "any"),
    Route("GET", "/api/audit.csv", "any"),
]

PAGE_ROUTES = [
    Route("GET", "dashboard", "any"),
    Route("GET", "batch_list", "any"),
    Route("GET", "batch_new", "any"),
    Route("GET", "batch_create", "any"),
    Route(
        "POST",
        "batch_create",
        "operate",
        {**OPTIONS, "name": "new", "items": "x", "owner-owner": "alpha"},
        refusals=CHOOSER,
    ),
    Route("GET", "batch_detail", "view"),
    Route("GET", "operation_detail", "view"),
    Route("POST", "operation_action", "operate", {"action": "retry"}),
    Route("POST", "batch_add_items", "operate", {"items": "c", "reopen": "on"}),
    Route("GET", "batch_compare_pick", "view"),
    Route("GET", "batch_compare", "view"),
    *(Route("POST", "batch_action", "operate", {"action": a}) for a in ("cancel", "pause", "resume", "retry")),
    Route("POST", "batch_action", "operate", {"action": "run-again"}),
    Route("POST", "batch_action", "manage", {"action": "delete"}),
    Route("POST", "batch_bulk", "operate", {"action": "pause", "ids": "{batch_id}"}, refused_like_any=True),
    Route("POST", "operations_bulk", "operate", {"action": "retry"}),
    Route("GET", "search", "any", query="?q=ba"),
    Route("GET", "limits", "any"),
    Route("GET", "type_docs", "any"),
    Route("POST", "limits", "staff", {"key": "api:new", "concurrency": "3", "per": "second"}),
    Route("POST", "limit_remove", "staff"),
    Route("GET", "stats", "any"),
    Route("GET", "workers", "staff"),
    Route("GET", "instance_list", "any"),
    Route(
        "POST",
        "instance_list",
        "manage",
        {"name": "new-db", "url": "sqlite:////tmp/n.db", "owner-owner": "alpha"},
        refusals=CHOOSER,
    ),
    Route("POST", "instance_import", "any", {"text": "name,url\nmine-db,sqlite:////tmp/m.db"}),
    Route("POST", "instance_test", "operate"),
    Route("GET", "instance_edit", "manage"),
    Route("POST", "instance_edit", "manage", {"name": "alpha-db", "region": "eu"}),
    Route("POST", "instance_remove", "manage"),
    Route("GET", "notification_subscriptions", "any"),
    Route(
        "POST",
        "notification_subscriptions",
        "manage",
        {"channel": "email", "events": ["failed"], "owner-owner": "alpha"},
        refusals=CHOOSER,
    ),
    Route("POST", "notification_signing_secret", "any"),
    Route("POST", "notification_subscription_action", "manage", {"action": "pause"}),
    Route("POST", "notification_delivery_resend", "operate"),
    Route("GET", "template_list", "any"),
    Route("GET", "template_new", "any"),
    Route(
        "POST",
        "template_new",
        "manage",
        {**OPTIONS, "name": "new", "items": "a", "owner-owner": "alpha"},
        refusals=CHOOSER,
    ),
    Route("GET", "template_detail", "view"),
    Route("GET", "template_edit", "manage"),
    Route("POST", "template_edit", "manage", {**OPTIONS, "name": "renamed", "items": "a"}),
    Route("POST", "template_run", "operate", {**OPTIONS, "name": "run"}),
    Route("POST", "template_delete", "manage"),
    Route("GET", "template_from_batch", "view"),
    Route("POST", "template_from_batch", "view", {"name": "mine"}),
    Route("GET", "schedule_list", "any"),
    Route(
        "POST",
        "schedule_list",
        "manage",
        {"template": "{template_id}", "cron": "0 4 * * *", "timezone": "UTC", "overlap": "skip", "missed": "skip"},
        # The form's template chooser offers only the templates the role may change.
        refusals=frozenset({422}),
    ),
    Route("GET", "schedule_preview", "any"),
    Route("GET", "schedule_detail", "view"),
    Route(
        "POST",
        "schedule_detail",
        "manage",
        {"template": "{template_id}", "cron": "0 5 * * *", "timezone": "UTC", "overlap": "skip", "missed": "skip"},
    ),
    Route("POST", "schedule_toggle", "manage"),
    Route("POST", "schedule_delete", "manage"),
    Route("GET", "token_list", "any"),
    Route("POST", "token_list", "any", {"name": "mine", "scope": "read"}),
    # A token is its user's alone (the admin's here): anyone else's is a 404.
    Route("POST", "token_revoke", "manage", refusals=frozenset({404})),
    Route("GET", "audit_list", "any"),
    Route("GET", "team_list", "any"),
    Route("POST", "team_list", "any", {"name": "Gamma"}),
    Route("GET", "team_detail", "view"),
    Route("POST", "team_detail", "manage", {"user": "pat", "role": "viewer"}),
    Route("POST", "team_member_action", "manage", {"action": "role", "role": "operator"}),
    Route("POST", "team_member_action", "manage", {"action": "remove"}),
]
# Pages outside teams and roles: signing in and out, passwords, liveness.
PAGES_APART = {
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    # Health and metrics answer without sign-in and show no one's data (tests/test_deploy.py and
    # tests/test_metrics.py test them).
    "healthz",
    "readyz",
    "metrics",
}


def page_patterns() -> dict[str, str]:
    """Every named page of the site (not the admin, the API or django-rq) and its route."""
    found: dict[str, str] = {}

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if str(pattern.pattern) not in ("admin/", "api/", "django-rq/"):
                    walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and pattern.name:
                found[pattern.name] = prefix + str(pattern.pattern)

    walk(get_resolver().url_patterns, "")
    return found


def fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        for converter in ("", "uuid:", "int:", "slug:", "str:"):
            text = text.replace(f"<{converter}{name}>", value)
        text = text.replace(f"{{{name}}}", value)
    return text


def snapshot() -> tuple:
    """What a refused request must leave as it was."""
    return (
        sorted(map(str, Batch.objects.values_list("id", "status", "total", "pending", "failed", "team_id", "name"))),
        sorted(Operation.objects.values_list("id", "status", "attempts")),
        sorted(map(str, BatchTemplate.objects.values_list("id", "name", "team_id", "updated_at", "run_count"))),
        sorted(map(str, Schedule.objects.values_list("id", "enabled", "cron", "updated_at"))),
        sorted(map(str, DatabaseInstance.objects.values_list("id", "name", "region", "team_id", "last_tested_at"))),
        sorted(map(str, Subscription.objects.values_list("id", "active", "url", "team_id"))),
        sorted(map(str, Delivery.objects.values_list("id", "status"))),
        sorted(Membership.objects.values_list("team_id", "user_id", "role")),
        sorted(Team.objects.values_list("id", "slug")),
        sorted(map(str, Limit.objects.values_list("key", "concurrency", "rate", "per"))),
    )


SCOPE_ACTIONS = {"read": {"view"}, "operate": {"view", "operate"}}


def api_body(route: Route, world: World) -> dict | None:
    body = json.loads(fill(json.dumps(route.body), world.values)) if route.body is not None else None
    if isinstance(body, dict) and body.get("template"):
        body["template"] = int(body["template"])
    return body


def client_for(world: World, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


def ask(client: Client, method: str, url: str, body: dict | None, *, api_call: bool):
    """The answer and whether the data changed, the request's writes rolled back afterwards."""
    with transaction.atomic():
        before = snapshot()
        if method == "GET":
            response = client.get(url)
        elif api_call:
            data = json.dumps(body) if body is not None else ""
            response = getattr(client, method.lower())(url, data, content_type="application/json")
        else:
            response = client.post(url, body or {})
        changed = snapshot() != before
        transaction.set_rollback(True)
    return response, changed


def check(route: Route, role: str, response, changed: bool, *, api_call: bool) -> str | None:
    """What is wrong with this answer for this role, or None."""
    status = response.status_code
    where = f"{route.method} {route.path} as {role}: {status}"
    if status >= 500:
        return f"{where} (a server error)"
    if role == "anonymous":
        expected_anonymous = 401 if api_call else 302
        if status != expected_anonymous:
            return f"{where}, expected {expected_anonymous}"
        return f"{where} changed data" if changed else None
    if role in ALLOWED[route.action] or (route.refused_like_any and status < 400):
        if status in (401, 403, 404):
            return f"{where}, expected to be allowed"
        if route.refused_like_any and role not in ALLOWED[route.action] and changed:
            return f"{where} changed what the role may not"
        return None
    # Outsiders do not learn that alpha's objects (or alpha) exist; members are told their role.
    allowed_refusals = {404} if role in OUTSIDERS and route.action != "staff" else {403}
    if route.refusals is not None:
        allowed_refusals = set(route.refusals)
    if status not in allowed_refusals:
        return f"{where}, expected {sorted(allowed_refusals)}"
    if changed:
        return f"{where}: a refused request changed data"
    if status == 403 and api_call and not response.json().get("detail"):
        return f"{where}: a 403 without detail"
    return None


def test_every_api_route_of_the_schema_is_swept():
    documented = {
        (method.upper(), path)
        for path, operations in api.get_openapi_schema()["paths"].items()
        for method in operations
    }
    assert documented == {(route.method, route.path) for route in API_ROUTES}


def test_every_page_is_swept():
    assert set(page_patterns()) - PAGES_APART == {route.path for route in PAGE_ROUTES}


@pytest.mark.parametrize("role", ROLES)
def test_the_api_answers_each_role_as_it_allows(world, role):
    client = client_for(world, role)
    problems = []
    for route in API_ROUTES:
        body = api_body(route, world)
        url = fill(route.path, world.values) + route.query
        response, changed = ask(client, route.method, url, body, api_call=True)
        problem = check(route, role, response, changed, api_call=True)
        if problem:
            problems.append(problem)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("role", ROLES)
def test_the_pages_answer_each_role_as_it_allows(world, role):
    client = client_for(world, role)
    patterns = page_patterns()
    problems = []
    for route in PAGE_ROUTES:
        body = dict(route.body or {})
        # `action` is a part of the address where the page's pattern has one, else a form field.
        in_address = "action>" in patterns[route.path]
        values = {**world.values, "action": body.pop("action", "") if in_address else ""}
        body = {key: fill(value, world.values) if isinstance(value, str) else value for key, value in body.items()}
        url = "/" + fill(patterns[route.path], values)
        response, changed = ask(client, route.method, url, body, api_call=False)
        problem = check(route, role, response, changed, api_call=False)
        if problem:
            problems.append(problem)
    assert problems == [], "\n".join(problems)


def test_lists_show_a_teams_objects_to_its_members_only(world):
    for role in ("plain", "beta", "viewer"):
        client = client_for(world, role)
        member = role == "viewer"
        batches = [b["id"] for b in client.get("/api/batches").json()["items"]]
        assert (str(world.batch.pk) in batches) == member, role
        templates = [t["id"] for t in client.get("/api/templates").json()["items"]]
        assert (world.template.pk in templates) == member, role
        schedules = [s["id"] for s in client.get("/api/schedules").json()["items"]]
        assert (world.schedule.pk in schedules) == member, role
        instances = [i["name"] for i in client.get("/api/instances").json()["items"]]
        assert ("alpha-db" in instances) == member, role
        subscriptions = [s["id"] for s in client.get("/api/subscriptions").json()]
        assert (world.subscription.pk in subscriptions) == member, role
        teams = [t["slug"] for t in client.get("/api/teams").json()["items"]]
        assert ("alpha" in teams) == member, role
        assert (world.batch.name in client.get("/batches/").content.decode()) == member, role


@pytest.mark.parametrize("scope", ["read", "operate"])
def test_a_scoped_token_of_an_admin_may_do_only_what_its_scope_allows(world, scope):
    """A read token gets a 403 on every write (whatever its body), an operate token on every change
    and delete; what the scope allows answers as for the admin's session."""
    _, key = services.token_create(user=world.users["admin"], name=scope, scope=scope)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    problems = []
    for route in API_ROUTES:
        if route.action == "staff":
            continue
        needed = "view" if route.method == "GET" else route.scope_action or route.action
        needed = "operate" if needed in ("any", "view") and route.method != "GET" else needed
        url = fill(route.path, world.values) + route.query
        response, changed = ask(client, route.method, url, api_body(route, world), api_call=True)
        where = f"{route.method} {route.path} with a {scope} token: {response.status_code}"
        if needed in SCOPE_ACTIONS[scope]:
            if response.status_code in (401, 403, 404) or response.status_code >= 500:
                problems.append(f"{where}, expected to be allowed")
        elif route.refused_like_any and response.status_code < 400:
            if changed:
                problems.append(f"{where} changed data")
        elif response.status_code != 403 or "scope" not in response.json()["detail"] or changed:
            problems.append(f"{where}, expected a 403 about the scope that changes nothing")
    assert problems == [], "\n".join(problems)


def test_a_read_token_is_refused_a_write_even_with_a_body_it_cannot_parse(world):
    _, key = services.token_create(user=world.users["admin"], name="read", scope="read")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post("/api/batches", "not json", content_type="application/json")
    assert response.status_code == 403
    assert response.json()["detail"] == "This API token's scope is read: it may not change anything."


def test_a_teams_token_reaches_only_the_teams_objects_and_creates_for_it(world):
    ada = world.users["admin"]
    own = services.batch_create(owner=ada, type="noop", name="ada's own", items=["a"], start=False)
    _, key = services.token_create(user=ada, name="alpha", scope="operate", team="alpha")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    listed = {b["id"] for b in client.get("/api/batches").json()["items"]}
    assert str(world.batch.pk) in listed and str(own.pk) not in listed
    assert client.get(f"/api/batches/{own.pk}").status_code == 404
    created = client.post("/api/batches", {"type": "noop", "name": "via token", "items": ["a"]}, "application/json")
    assert created.status_code == 201 and created.json()["team"] == "alpha"
