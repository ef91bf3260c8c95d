"""The JSON API through django.test.Client: shapes, auth, validation, idempotency, rate
limit, owner isolation, transitions, results, analytics and the schema.

Batches made through the API stay queued here: lanes are enqueued after commit, and on_commit
callbacks do not run in these (transaction-wrapped) tests.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.middleware.csrf import CSRF_ALLOWED_CHARS
from django.test import Client, override_settings
from django.utils import timezone
from django.utils.crypto import get_random_string

from jobs import services
from jobs.models import Batch, BatchEvent, IdempotencyRecord, Operation, ResultRow
from jobs.services import tokens

BATCHES = "/api/batches"
BATCH_FIELDS = {
    "id",
    "name",
    "description",
    "type",
    "status",
    "owner",
    # the options
    "params",
    "max_parallel",
    "stop_on_error",
    "max_retries",
    "retry_backoff_s",
    "timeout_s",
    "priority",
    # the counters
    "total",
    "pending",
    "running",
    "completed",
    "failed",
    "skipped",
    "percent_complete",
    "eta_seconds",
    "current_operation",
    "created_at",
    "started_at",
    "finished_at",
}


class ApiClient:
    """A django.test.Client that authenticates every request with a fresh Bearer token of `user`."""

    def __init__(self, user) -> None:
        self.client = Client()
        self.token, key = tokens.token_create(user=user, name="t")
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}

    def get(self, path: str, data: dict | None = None, **extra):
        return self.client.get(path, data or {}, **self.headers, **extra)

    def post(self, path: str, body=None, **extra):
        data = "" if body is None else json.dumps(body)
        return self.client.post(path, data, content_type="application/json", **self.headers, **extra)

    def post_raw(self, path: str, data: str, **extra):
        return self.client.post(path, data, content_type="application/json", **self.headers, **extra)

    def delete(self, path: str, **extra):
        return self.client.delete(path, **self.headers, **extra)


@pytest.fixture(autouse=True)
def _fresh_rate_limit(redis_clean):
    """Every creation counts against the rate limit in Redis: start each test from zero."""
    yield


@pytest.fixture
def as_alice(alice) -> ApiClient:
    return ApiClient(alice)


@pytest.fixture
def as_bob(bob) -> ApiClient:
    return ApiClient(bob)


@pytest.fixture
def as_staff(staff) -> ApiClient:
    return ApiClient(staff)


def body(**changes) -> dict:
    data = {"type": "demo.sleep", "name": "nightly", "items": ["a", "b", "c"]}
    data.update(changes)
    return data


def make_batch(owner, items=("a", "b", "c"), **options) -> Batch:
    options.setdefault("type", "demo.sleep")
    options.setdefault("name", "test batch")
    return services.batch_create(owner=owner, items=list(items), **options)


def claim(batch: Batch) -> services.Claim:
    result = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    assert isinstance(result, services.Claim), result
    return result


def run(batch: Batch, outcomes: list[str], durations: list[int] | None = None) -> Batch:
    """Claim one operation per outcome ("ok" or an error type) and report it."""
    durations = durations or [5] * len(outcomes)
    claims = [claim(batch) for _ in outcomes]
    for outcome, duration, current in zip(outcomes, durations, claims, strict=True):
        if outcome == "ok":
            services.operation_complete(claim=current, duration_ms=duration)
        else:
            services.operation_fail(claim=current, error=f"{outcome}!", error_type=outcome, duration_ms=duration)
    batch.refresh_from_db()
    return batch


def assert_error(response, status: int, *paths: str) -> dict:
    """A JSON error with a message and, for each path, messages under it."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    data = response.json()
    assert isinstance(data["message"], str) and data["message"]
    for path in paths:
        assert data["errors"].get(path), (path, data["errors"])
    return data


def nothing_written() -> bool:
    return Batch.objects.count() == Operation.objects.count() == BatchEvent.objects.count() == 0


# --- POST /api/batches --------------------------------------------------------------------------


def test_creating_a_batch_answers_201_with_the_whole_batch(as_alice, alice):
    response = as_alice.post(
        BATCHES,
        body(
            name="nightly",
            description="every night",
            params={"duration_ms": 50},
            max_parallel=2,
            stop_on_error=True,
            max_retries=3,
            retry_backoff_s=2.5,
            timeout_s=60,
            priority="high",
        ),
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert BATCH_FIELDS <= set(data)
    batch = Batch.objects.get()
    assert data["id"] == str(batch.pk)
    assert batch.owner == alice
    assert {k: data[k] for k in ("name", "description", "type", "status", "owner")} == {
        "name": "nightly",
        "description": "every night",
        "type": "demo.sleep",
        "status": "queued",
        "owner": "alice",
    }
    assert data["params"] == {"duration_ms": 50, "failure_rate": 0.0, "fail_attempts": 0}
    assert (data["max_parallel"], data["stop_on_error"], data["max_retries"]) == (2, True, 3)
    assert (data["retry_backoff_s"], data["timeout_s"], data["priority"]) == (2.5, 60, "high")
    assert [data[k] for k in ("total", "pending", "running", "completed", "failed", "skipped")] == [3, 3, 0, 0, 0, 0]
    assert (data["percent_complete"], data["eta_seconds"], data["current_operation"]) == (0, None, "")
    assert data["created_at"] and data["started_at"] is None and data["finished_at"] is None
    assert list(batch.operations.values_list("seq", "label", "params")) == [(1, "a", {}), (2, "b", {}), (3, "c", {})]


def test_the_options_take_their_defaults(as_alice):
    data = as_alice.post(BATCHES, body()).json()
    assert (data["description"], data["max_parallel"], data["stop_on_error"], data["max_retries"]) == ("", 4, False, 0)
    assert (data["retry_backoff_s"], data["timeout_s"], data["priority"]) == (1.0, 300, "default")
    assert data["params"] == {"duration_ms": 100, "failure_rate": 0.0, "fail_attempts": 0}


def test_items_can_be_labels_or_objects_with_params(as_alice):
    response = as_alice.post(BATCHES, body(items=["a", {"label": "b", "params": {"duration_ms": 5}}, {"label": "c"}]))
    assert response.status_code == 201, response.content
    batch = Batch.objects.get()
    assert list(batch.operations.values_list("seq", "label", "params")) == [
        (1, "a", {}),
        (2, "b", {"duration_ms": 5}),
        (3, "c", {}),
    ]


@pytest.mark.parametrize(
    "changes, path",
    [
        ({"type": "no.such.type"}, "type"),
        ({"type": None}, "type"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"items": []}, "items"),
        ({"items": ["a", {"label": ""}]}, "items[1].label"),
        ({"items": ["a", {"label": "b", "params": {"duration_ms": "slow"}}]}, "items[1].params.duration_ms"),
        ({"params": {"failure_rate": 2}}, "params.failure_rate"),
        ({"params": {"bogus": 1}}, "params"),
        ({"max_parallel": 0}, "max_parallel"),
        ({"max_parallel": 101}, "max_parallel"),
        ({"max_parallel": "many"}, "max_parallel"),
        ({"max_retries": 11}, "max_retries"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"priority": "urgent"}, "priority"),
    ],
)
def test_a_bad_body_is_a_422_with_field_paths_and_writes_nothing(as_alice, changes, path):
    data = assert_error(as_alice.post(BATCHES, body(**changes)), 422, path)
    assert set(data) == {"message", "errors"}
    assert nothing_written()


def test_a_body_without_required_fields_names_each_of_them(as_alice):
    assert_error(as_alice.post(BATCHES, {}), 422, "type", "name", "items")
    assert nothing_written()


def test_an_item_object_without_a_label_is_reported_at_its_path(as_alice):
    data = assert_error(as_alice.post(BATCHES, body(items=["a", {"params": {}}])), 422)
    assert set(data["errors"]) == {"items[1].label"}
    assert nothing_written()


def test_malformed_json_is_a_400_with_a_message(as_alice):
    response = as_alice.post_raw(BATCHES, '{"type": "demo.sleep", "name": ')
    assert_error(response, 400)
    assert nothing_written()


@override_settings(BATCH_MAX_OPERATIONS=3)
def test_more_operations_than_the_limit_is_a_413(as_alice):
    assert as_alice.post(BATCHES, body(items=["a", "b", "c"])).status_code == 201
    assert_error(as_alice.post(BATCHES, body(items=["a", "b", "c", "d"])), 413, "items")
    assert Batch.objects.count() == 1


def test_without_credentials_it_is_a_401(alice):
    client = Client()
    assert_error(client.post(BATCHES, json.dumps(body()), content_type="application/json"), 401)
    assert_error(client.get(BATCHES), 401)
    assert_error(client.get(BATCHES, HTTP_AUTHORIZATION="Bearer bst_not-a-real-key"), 401)
    assert_error(client.get(BATCHES, HTTP_AUTHORIZATION="Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ="), 401)
    assert nothing_written()


def test_a_revoked_token_is_a_401(as_alice):
    assert as_alice.get(BATCHES).status_code == 200
    tokens.token_revoke(token=as_alice.token)
    assert_error(as_alice.get(BATCHES), 401)
    assert_error(as_alice.post(BATCHES, body()), 401)
    assert nothing_written()


def test_an_inactive_users_token_is_a_401(as_alice, alice):
    alice.is_active = False
    alice.save()
    assert_error(as_alice.get(BATCHES), 401)


@override_settings(BATCH_CREATE_RATE_LIMIT=2, BATCH_CREATE_RATE_WINDOW_S=3600)
def test_creation_is_rate_limited_per_user_with_retry_after(as_alice, as_bob):
    assert [as_alice.post(BATCHES, body()).status_code for _ in range(2)] == [201, 201]
    refused = as_alice.post(BATCHES, body(name="one too many"))
    assert_error(refused, 429)
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert Batch.objects.count() == 2
    assert not Batch.objects.filter(name="one too many").exists()
    # The limit is per user.
    assert as_bob.post(BATCHES, body()).status_code == 201


# --- sessions and CSRF ----------------------------------------------------------------------------


def test_a_session_works_for_reads_without_a_csrf_token(alice):
    make_batch(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.get(BATCHES)
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_a_session_post_needs_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    refused = client.post(BATCHES, json.dumps(body()), content_type="application/json")
    assert_error(refused, 403)
    assert nothing_written()
    # What a browser has after any page with a form: the cookie, echoed in the X-CSRFToken header.
    secret = get_random_string(32, CSRF_ALLOWED_CHARS)
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    wrong = client.post(BATCHES, json.dumps(body()), content_type="application/json", HTTP_X_CSRFTOKEN="x" * 32)
    assert_error(wrong, 403)
    accepted = client.post(BATCHES, json.dumps(body()), content_type="application/json", HTTP_X_CSRFTOKEN=secret)
    assert accepted.status_code == 201, accepted.content
    assert Batch.objects.get().owner == alice


def test_the_csrf_token_of_a_rendered_page_is_accepted(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/admin/login/")
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    batch = make_batch(alice)
    response = client.post(f"{BATCHES}/{batch.pk}/pause", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    batch.refresh_from_db()
    assert batch.status == "paused"


def test_a_post_without_any_credentials_is_a_401_not_a_csrf_403(db):
    client = Client(enforce_csrf_checks=True)
    assert_error(client.post(BATCHES, json.dumps(body()), content_type="application/json"), 401)


# --- Idempotency-Key ------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_batch(as_alice):
    first = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="nightly-1")
    second = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="nightly-1")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] == second.json()["id"]
    assert Batch.objects.count() == 1
    assert Operation.objects.count() == 3


def test_the_same_key_with_another_body_is_a_409_that_says_so(as_alice):
    assert as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    error = assert_error(as_alice.post(BATCHES, body(name="other"), HTTP_IDEMPOTENCY_KEY="k"), 409, "Idempotency-Key")
    assert error["message"] == "Idempotency-Key reused with another request body."
    assert Batch.objects.count() == 1
    assert Batch.objects.count() == 1
    assert Batch.objects.get().name == "nightly"


def test_the_same_key_from_another_user_creates_their_own_batch(as_alice, as_bob, alice, bob):
    mine = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k").json()
    theirs = as_bob.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k").json()
    assert mine["id"] != theirs["id"]
    assert (mine["owner"], theirs["owner"]) == ("alice", "bob")
    assert Batch.objects.filter(owner=alice).count() == Batch.objects.filter(owner=bob).count() == 1


def test_a_key_older_than_24_hours_creates_a_new_batch(as_alice):
    first = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k").json()
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, minutes=1))
    second = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k")
    assert second.status_code == 201
    assert second.json()["id"] != first["id"]
    assert Batch.objects.count() == 2
    # The key now points at the new batch.
    assert str(IdempotencyRecord.objects.get().batch_id) == second.json()["id"]
    third = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k")
    assert third.json()["id"] == second.json()["id"]


def test_a_key_younger_than_24_hours_still_replays(as_alice):
    first = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k").json()
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=23, minutes=59))
    assert as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k").json()["id"] == first["id"]
    assert Batch.objects.count() == 1


@override_settings(BATCH_CREATE_RATE_LIMIT=1, BATCH_CREATE_RATE_WINDOW_S=3600)
def test_a_replay_does_not_count_against_the_rate_limit(as_alice):
    first = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k")
    replay = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k")
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json()["id"] == first.json()["id"]
    # The limit is reached all the same: a new batch is refused.
    assert_error(as_alice.post(BATCHES, body(name="new")), 429)
    assert Batch.objects.count() == 1


def test_the_key_of_a_deleted_batch_is_a_409(as_alice, alice):
    first = as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k").json()
    batch = Batch.objects.get(pk=first["id"])
    services.batch_cancel(batch=batch)
    services.batch_delete(batch=batch)
    assert_error(as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k"), 409, "status")
    assert Batch.objects.count() == 0


def test_an_overlong_key_is_a_422(as_alice):
    assert_error(as_alice.post(BATCHES, body(), HTTP_IDEMPOTENCY_KEY="k" * 256), 422, "Idempotency-Key")
    assert nothing_written()


# --- GET /api/batches ---------------------------------------------------------------------------


def test_owners_see_only_their_batches_and_staff_sees_all(as_alice, as_bob, as_staff, alice, bob):
    mine = make_batch(alice, name="mine")
    theirs = make_batch(bob, name="theirs")
    alice_list = as_alice.get(BATCHES).json()
    assert alice_list["count"] == 1
    assert [b["id"] for b in alice_list["items"]] == [str(mine.pk)]
    assert BATCH_FIELDS <= set(alice_list["items"][0])
    assert [b["id"] for b in as_bob.get(BATCHES).json()["items"]] == [str(theirs.pk)]
    staff_list = as_staff.get(BATCHES).json()
    assert staff_list["count"] == 2
    assert {b["owner"] for b in staff_list["items"]} == {"alice", "bob"}


def set_created(batch: Batch, moment: datetime) -> Batch:
    Batch.objects.filter(pk=batch.pk).update(created_at=moment)
    batch.refresh_from_db()
    return batch


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [b["name"] for b in response.json()["items"]]


@pytest.fixture
def three_days(alice) -> dict[str, Batch]:
    """Alice's batches created at noon (UTC) on 9, 10 and 11 January 2024, newest first."""
    found = {}
    for day, name, type in ((9, "old", "noop"), (10, "mid", "demo.sleep"), (11, "new", "demo.sleep")):
        batch = make_batch(alice, name=name, type=type, description=f"made on the {day}th")
        found[name] = set_created(batch, datetime(2024, 1, day, 12, tzinfo=UTC))
    return found


def test_the_list_is_newest_first(as_alice, three_days):
    assert names(as_alice.get(BATCHES)) == ["new", "mid", "old"]


def test_the_list_filters_by_status_and_type(as_alice, three_days):
    services.batch_cancel(batch=three_days["mid"])
    assert names(as_alice.get(BATCHES, {"status": "cancelled"})) == ["mid"]
    assert names(as_alice.get(BATCHES, {"status": "queued"})) == ["new", "old"]
    assert names(as_alice.get(BATCHES, {"type": "noop"})) == ["old"]
    assert names(as_alice.get(BATCHES, {"type": "demo.sleep", "status": "queued"})) == ["new"]
    assert as_alice.get(BATCHES, {"status": "completed"}).json() == {"items": [], "count": 0}
    assert_error(as_alice.get(BATCHES, {"status": "sleepy"}), 422, "status")


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"created_after": "2024-01-10"}, ["new", "mid"]),
        ({"created_before": "2024-01-10"}, ["mid", "old"]),
        ({"created_after": "2024-01-10", "created_before": "2024-01-10"}, ["mid"]),
        ({"created_before": "2024-01-11"}, ["new", "mid", "old"]),
        ({"created_after": "2024-01-10T12:00:01"}, ["new"]),
        ({"created_after": "2024-01-10T12:00:00+00:00"}, ["new", "mid"]),
        ({"created_before": "2024-01-10T12:00:00Z"}, ["mid", "old"]),
        ({"created_before": "2024-01-10T11:59:59"}, ["old"]),
        ({"created_after": "2024-01-12"}, []),
    ],
)
def test_the_list_filters_by_creation_date_or_datetime(as_alice, three_days, query, expected):
    assert names(as_alice.get(BATCHES, query)) == expected


@pytest.mark.parametrize("field", ["created_after", "created_before"])
def test_a_bad_date_is_a_422_at_its_field(as_alice, three_days, field):
    assert_error(as_alice.get(BATCHES, {field: "yesterday"}), 422, field)


@pytest.mark.parametrize("value", ["2024-13-45", "2024-01-10T25:00:00"])
def test_an_impossible_date_is_a_422_not_a_500(as_alice, three_days, value):
    as_alice.client.raise_request_exception = False
    assert_error(as_alice.get(BATCHES, {"created_after": value}), 422, "created_after")


def test_the_list_searches_name_and_description(as_alice, as_bob, three_days, bob):
    make_batch(bob, name="Old bob")
    assert names(as_alice.get(BATCHES, {"q": "OLD"})) == ["old"]
    assert names(as_alice.get(BATCHES, {"q": "10th"})) == ["mid"]
    assert names(as_alice.get(BATCHES, {"q": "made on"})) == ["new", "mid", "old"]
    assert names(as_alice.get(BATCHES, {"q": "nothing like it"})) == []


def test_the_list_pages_with_limit_and_offset_and_counts_all(as_alice, three_days):
    first = as_alice.get(BATCHES, {"limit": 2}).json()
    assert ([b["name"] for b in first["items"]], first["count"]) == (["new", "mid"], 3)
    second = as_alice.get(BATCHES, {"limit": 2, "offset": 2}).json()
    assert ([b["name"] for b in second["items"]], second["count"]) == (["old"], 3)
    beyond = as_alice.get(BATCHES, {"limit": 2, "offset": 5}).json()
    assert beyond == {"items": [], "count": 3}
    filtered = as_alice.get(BATCHES, {"type": "demo.sleep", "limit": 1, "offset": 1}).json()
    assert ([b["name"] for b in filtered["items"]], filtered["count"]) == (["mid"], 2)


# --- one batch: detail, progress, operations ------------------------------------------------------


def test_a_batch_is_shown_with_its_current_state(as_alice, alice):
    batch = make_batch(alice, items=["a", "b", "c", "d"], max_parallel=2)
    run(batch, ["ok"], [400])
    claim(batch)
    data = as_alice.get(f"{BATCHES}/{batch.pk}").json()
    assert BATCH_FIELDS <= set(data)
    assert (data["id"], data["status"], data["owner"]) == (str(batch.pk), "running", "alice")
    assert [data[k] for k in ("total", "pending", "running", "completed", "failed", "skipped")] == [4, 2, 1, 1, 0, 0]
    assert data["percent_complete"] == 25
    assert data["current_operation"] == "b"
    assert data["started_at"] is not None and data["finished_at"] is None
    # The ETA is the observed throughput: 1 finished in the 10 s since the older mark, 3 remaining.
    assert data["eta_seconds"] is None  # one mark only, taken by the outcome just recorded
    Batch.objects.filter(pk=batch.pk).update(rate_prev_at=timezone.now() - timedelta(seconds=10), rate_prev_done=0)
    data = as_alice.get(f"{BATCHES}/{batch.pk}").json()
    assert 29.5 <= data["eta_seconds"] <= 31


def test_progress_has_counters_percent_and_eta(as_alice, alice):
    batch = make_batch(alice, items=["a", "b", "c"])
    run(batch, ["ok", "Boom"], [100, 300])
    # 2 finished in the 4 s since the older throughput mark: 1 remaining takes 2 s.
    Batch.objects.filter(pk=batch.pk).update(rate_prev_at=timezone.now() - timedelta(seconds=4), rate_prev_done=0)
    response = as_alice.get(f"{BATCHES}/{batch.pk}/progress")
    assert response.status_code == 200
    assert response.json() == {
        "id": str(batch.pk),
        "status": "running",
        "total": 3,
        "pending": 1,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "skipped": 0,
        "percent_complete": 66,
        "eta_seconds": response.json()["eta_seconds"],
        "current_operation": "b",
    }
    assert 1.9 <= response.json()["eta_seconds"] <= 2.2


def test_operations_are_listed_in_sequence_with_a_status_filter_and_paging(as_alice, alice):
    batch = make_batch(alice, items=["a", "b", "c", "d", "e"], max_parallel=5)
    run(batch, ["ok", "Boom", "ok"], [10, 20, 30])
    url = f"{BATCHES}/{batch.pk}/operations"
    everything = as_alice.get(url).json()
    assert everything["count"] == 5
    assert [(o["seq"], o["label"], o["status"]) for o in everything["items"]] == [
        (1, "a", "completed"),
        (2, "b", "failed"),
        (3, "c", "completed"),
        (4, "d", "pending"),
        (5, "e", "pending"),
    ]
    failed = everything["items"][1]
    assert (failed["error"], failed["error_type"], failed["duration_ms"], failed["attempts"]) == (
        "Boom!",
        "Boom",
        20,
        1,
    )
    completed = as_alice.get(url, {"status": "completed"}).json()
    assert ([o["label"] for o in completed["items"]], completed["count"]) == (["a", "c"], 2)
    page = as_alice.get(url, {"limit": 2, "offset": 2}).json()
    assert ([o["label"] for o in page["items"]], page["count"]) == (["c", "d"], 5)
    pending_page = as_alice.get(url, {"status": "pending", "limit": 1, "offset": 1}).json()
    assert ([o["label"] for o in pending_page["items"]], pending_page["count"]) == (["e"], 2)
    assert_error(as_alice.get(url, {"status": "asleep"}), 422, "status")


# --- results and CSV ----------------------------------------------------------------------------


@pytest.fixture
def batch_with_rows(alice) -> Batch:
    batch = make_batch(alice, items=["a", "b"], max_parallel=2)
    first, second = claim(batch), claim(batch)
    services.operation_complete(claim=first, duration_ms=5, rows=[{"x": 1, "y": "a"}])
    services.operation_complete(claim=second, duration_ms=5, rows=[{"x": 2, "y": "b, with a comma"}, {"x": 3}])
    batch.refresh_from_db()
    assert batch.status == "completed"
    return batch


def test_results_are_the_rows_of_all_operations_with_their_columns(as_alice, batch_with_rows):
    response = as_alice.get(f"{BATCHES}/{batch_with_rows.pk}/results")
    assert response.status_code == 200
    assert response.json() == {
        "columns": ["operation", "x", "y"],
        "items": [
            {"operation": "a", "x": 1, "y": "a"},
            {"operation": "b", "x": 2, "y": "b, with a comma"},
            {"operation": "b", "x": 3},
        ],
        "count": 3,
    }
    page = as_alice.get(f"{BATCHES}/{batch_with_rows.pk}/results", {"limit": 1, "offset": 1}).json()
    assert (page["items"], page["count"]) == ([{"operation": "b", "x": 2, "y": "b, with a comma"}], 3)


def test_results_of_a_batch_without_rows_are_empty(as_alice, alice):
    batch = make_batch(alice)
    assert as_alice.get(f"{BATCHES}/{batch.pk}/results").json() == {
        "columns": ["operation"],
        "items": [],
        "count": 0,
    }


def test_results_csv_is_streamed_with_a_header(as_alice, batch_with_rows):
    response = as_alice.get(f"{BATCHES}/{batch_with_rows.pk}/results.csv")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert f"batch-{batch_with_rows.short_id}-results.csv" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode()
    assert text.splitlines() == ["operation,x,y", "a,1,a", 'b,2,"b, with a comma"', "b,3,"]
    assert ResultRow.objects.count() == 3


# --- analytics ----------------------------------------------------------------------------------


def test_analytics_has_success_rate_duration_percentiles_and_error_groups(as_alice, alice):
    batch = make_batch(alice, items=["a", "b", "c", "d", "e"], max_parallel=4)
    run(batch, ["ok", "Boom", "Boom", "Timeout"], [10, 20, 30, 40])
    response = as_alice.get(f"{BATCHES}/{batch.pk}/analytics")
    assert response.status_code == 200
    data = response.json()
    assert (data["total"], data["finished"]) == (5, 4)
    assert data["success_rate"] == 0.25
    assert data["duration_mean_ms"] == 25.0
    assert data["duration_p50_ms"] == 25.0
    # Linear interpolation between closest ranks: 30 + 10 × 0.85, 30 + 10 × 0.97.
    assert data["duration_p95_ms"] == pytest.approx(38.5)
    assert data["duration_p99_ms"] == pytest.approx(39.7)
    assert data["error_types"] == [
        {"error_type": "Boom", "count": 2, "share": 0.6667},
        {"error_type": "Timeout", "count": 1, "share": 0.3333},
    ]
    assert [(e["error_type"], e["message"], e["count"]) for e in data["errors"]] == [
        ("Boom", "Boom!", 2),
        ("Timeout", "Timeout!", 1),
    ]


def test_analytics_of_a_batch_with_nothing_finished_are_zeros(as_alice, alice):
    batch = make_batch(alice)
    data = as_alice.get(f"{BATCHES}/{batch.pk}/analytics").json()
    assert (data["total"], data["finished"], data["success_rate"]) == (3, 0, 0.0)
    assert (data["duration_mean_ms"], data["duration_p50_ms"], data["duration_p99_ms"]) == (0.0, 0.0, 0.0)
    assert (data["errors"], data["error_types"], data["completions"]["buckets"]) == ([], [], [])


# --- another user's batch, unknown ids and URLs -----------------------------------------------------

ENDPOINTS = [
    ("get", ""),
    ("get", "/progress"),
    ("get", "/operations"),
    ("get", "/results"),
    ("get", "/results.csv"),
    ("get", "/operations.csv"),
    ("get", "/analytics"),
    ("post", "/cancel"),
    ("post", "/pause"),
    ("post", "/resume"),
    ("post", "/retry"),
    ("delete", ""),
]


@pytest.mark.parametrize("method, suffix", ENDPOINTS)
def test_another_users_batch_is_a_404_on_every_endpoint(as_alice, bob, method, suffix):
    theirs = make_batch(bob, items=["a", "b"], max_parallel=2)
    run(theirs, ["ok", "Boom"])  # partial_success: retry and delete would be allowed for bob
    before = (theirs.status, theirs.version)
    response = getattr(as_alice, method)(f"{BATCHES}/{theirs.pk}{suffix}")
    assert_error(response, 404)
    theirs.refresh_from_db()
    assert (theirs.status, theirs.version) == before


@pytest.mark.parametrize("method, suffix", ENDPOINTS)
def test_staff_reach_anyones_batch(as_staff, bob, method, suffix):
    theirs = make_batch(bob, items=["a", "b"], max_parallel=2)
    run(theirs, ["ok", "Boom"])
    if suffix in ("/cancel", "/pause", "/resume"):
        services.batch_retry_failed(batch=theirs)  # queued again, so cancel and pause are legal
        if suffix == "/resume":
            services.batch_pause(batch=theirs)
    response = getattr(as_staff, method)(f"{BATCHES}/{theirs.pk}{suffix}")
    assert response.status_code in (200, 204), (response.status_code, response.content)


@pytest.mark.parametrize("method, suffix", ENDPOINTS)
def test_an_unknown_batch_id_is_a_404(as_alice, method, suffix):
    assert_error(getattr(as_alice, method)(f"{BATCHES}/00000000-0000-4000-8000-000000000000{suffix}"), 404)


@pytest.mark.parametrize("method, suffix", ENDPOINTS)
def test_a_non_uuid_id_is_a_json_404(as_alice, method, suffix):
    assert_error(getattr(as_alice, method)(f"{BATCHES}/not-a-uuid{suffix}"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/api/nothing",
        "/api/batches/1/nothing",
        "/api/stats/nothing",
        "/api/",
    ],
)
def test_an_unknown_api_url_is_a_json_404(as_alice, path):
    assert_error(as_alice.get(path), 404)


# --- transitions --------------------------------------------------------------------------------


def test_cancel_answers_the_cancelled_batch(as_alice, alice):
    batch = make_batch(alice)
    response = as_alice.post(f"{BATCHES}/{batch.pk}/cancel")
    assert response.status_code == 200
    data = response.json()
    assert (data["status"], data["skipped"], data["pending"], data["percent_complete"]) == ("cancelled", 3, 0, 100)
    assert data["finished_at"] is not None
    batch.refresh_from_db()
    assert (batch.status, batch.cancelled_by) == ("cancelled", alice)


def test_pause_and_resume_answer_the_new_state(as_alice, alice):
    batch = make_batch(alice)
    paused = as_alice.post(f"{BATCHES}/{batch.pk}/pause")
    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    batch.refresh_from_db()
    assert batch.status == "paused"
    resumed = as_alice.post(f"{BATCHES}/{batch.pk}/resume")
    # Not started yet: back to queued.
    assert (resumed.status_code, resumed.json()["status"]) == (200, "queued")
    claim(batch)
    as_alice.post(f"{BATCHES}/{batch.pk}/pause")
    assert as_alice.post(f"{BATCHES}/{batch.pk}/resume").json()["status"] == "running"
    batch.refresh_from_db()
    assert batch.status == "running"
    assert list(batch.events.values_list("kind", flat=True)) == [
        "created",
        "paused",
        "resumed",
        "started",
        "paused",
        "resumed",
    ]


def test_retry_answers_how_many_and_the_batch(as_alice, alice):
    batch = make_batch(alice, items=["a", "b", "c"], max_parallel=3)
    run(batch, ["ok", "Boom", "Boom"])
    assert batch.status == "partial_success"
    response = as_alice.post(f"{BATCHES}/{batch.pk}/retry")
    assert response.status_code == 200
    data = response.json()
    assert data["retried"] == 2
    assert (data["batch"]["status"], data["batch"]["failed"], data["batch"]["pending"]) == ("queued", 0, 2)
    assert data["batch"]["finished_at"] is None
    batch.refresh_from_db()
    assert (batch.status, batch.failed, batch.pending, batch.completed) == ("queued", 0, 2, 1)


def complete(batch: Batch) -> Batch:
    return run(batch, ["ok"] * batch.total)


@pytest.mark.parametrize(
    "prepare, action, status",
    [
        (complete, "resume", "completed"),
        (lambda b: b, "resume", "queued"),
        (complete, "retry", "completed"),
        (lambda b: b, "retry", "queued"),
        (claim, "retry", "running"),
        (complete, "pause", "completed"),
        (complete, "cancel", "completed"),
        (lambda b: services.batch_cancel(batch=b), "cancel", "cancelled"),
        (lambda b: services.batch_pause(batch=b), "pause", "paused"),
    ],
)
def test_an_illegal_transition_is_a_409_naming_the_status(as_alice, alice, prepare, action, status):
    batch = make_batch(alice, items=["a"])
    prepare(batch)
    batch.refresh_from_db()
    assert batch.status == status
    version = batch.version
    data = assert_error(as_alice.post(f"{BATCHES}/{batch.pk}/{action}"), 409, "status")
    assert data["errors"] == {"status": [status]}
    batch.refresh_from_db()
    assert (batch.status, batch.version) == (status, version)


def test_delete_removes_a_finished_batch(as_alice, alice):
    batch = complete(make_batch(alice))
    response = as_alice.delete(f"{BATCHES}/{batch.pk}")
    assert response.status_code == 204
    assert response.content == b""
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not Operation.objects.exists()
    assert_error(as_alice.get(f"{BATCHES}/{batch.pk}"), 404)


@pytest.mark.parametrize("prepare", [lambda b: b, lambda b: run(b, ["ok"]), lambda b: services.batch_pause(batch=b)])
def test_delete_refuses_an_active_batch(as_alice, alice, prepare):
    batch = make_batch(alice)
    prepare(batch)
    batch.refresh_from_db()
    data = assert_error(as_alice.delete(f"{BATCHES}/{batch.pk}"), 409, "status")
    assert data["errors"]["status"] == [batch.status]
    assert Batch.objects.filter(pk=batch.pk).exists()
    assert Operation.objects.filter(batch=batch).count() == 3


# --- cleanup ------------------------------------------------------------------------------------


@pytest.fixture
def aged(alice, bob) -> dict[str, Batch]:
    """Finished batches 10 days and 1 day old for alice and bob, and an old active one of alice's."""
    found = {}
    for owner in (alice, bob):
        for age in (10, 1):
            batch = make_batch(owner, name=f"{owner.username}-{age}d")
            services.batch_cancel(batch=batch)
            Batch.objects.filter(pk=batch.pk).update(finished_at=timezone.now() - timedelta(days=age))
            found[batch.name] = batch
    active = make_batch(alice, name="alice-active")
    set_created(active, timezone.now() - timedelta(days=30))
    found[active.name] = active
    return found


def remaining() -> set[str]:
    return set(Batch.objects.values_list("name", flat=True))


def test_cleanup_deletes_only_the_callers_old_finished_batches(as_alice, aged):
    response = as_alice.post(f"{BATCHES}/cleanup", {"days_to_keep": 7})
    assert response.status_code == 200
    assert response.json() == {"deleted": 1}
    assert remaining() == {"alice-1d", "alice-active", "bob-10d", "bob-1d"}


def test_cleanup_by_staff_deletes_everyones_old_finished_batches(as_staff, aged):
    assert as_staff.post(f"{BATCHES}/cleanup", {"days_to_keep": 7}).json() == {"deleted": 2}
    assert remaining() == {"alice-1d", "alice-active", "bob-1d"}


def test_cleanup_with_zero_days_keeps_only_active_batches(as_alice, aged):
    assert as_alice.post(f"{BATCHES}/cleanup", {"days_to_keep": 0}).json() == {"deleted": 2}
    assert remaining() == {"alice-active", "bob-10d", "bob-1d"}


@pytest.mark.parametrize("payload", [{"days_to_keep": -1}, {"days_to_keep": "a week"}, {}])
def test_cleanup_refuses_a_bad_days_to_keep(as_alice, aged, payload):
    assert_error(as_alice.post(f"{BATCHES}/cleanup", payload), 422, "days_to_keep")
    assert len(remaining()) == 5


# --- stats and operation types --------------------------------------------------------------------


def test_stats_count_the_callers_batches_by_status_and_type(as_alice, as_staff, alice, bob):
    complete(make_batch(alice, items=["a"]))
    complete(make_batch(alice, items=["a"], type="noop"))
    run(make_batch(alice, items=["a"]), ["Boom"])
    make_batch(alice)
    complete(make_batch(bob, items=["a"]))
    response = as_alice.get("/api/stats")
    assert response.status_code == 200
    data = response.json()
    assert {k: data[k] for k in ("total", "by_status", "by_type", "completion_rate")} == {
        "total": 4,
        "by_status": {"completed": 2, "failed": 1, "queued": 1},
        "by_type": {"demo.sleep": 3, "noop": 1},
        "completion_rate": 0.6667,
    }
    assert data["operations"] == {"pending": 3, "running": 0, "completed": 2, "failed": 1, "skipped": 0}
    assert data["operations_last_24h"] == 3
    everyone = as_staff.get("/api/stats").json()
    assert (everyone["total"], everyone["by_status"]["completed"], everyone["completion_rate"]) == (5, 3, 0.75)


def test_stats_without_batches(as_alice):
    data = as_alice.get("/api/stats").json()
    assert {k: data[k] for k in ("total", "by_status", "by_type", "completion_rate")} == {
        "total": 0,
        "by_status": {},
        "by_type": {},
        "completion_rate": None,
    }
    assert (data["operations_last_24h"], len(data["throughput_24h"])) == (0, 24)


def test_operation_types_list_noop_and_demo_sleep_with_their_params(as_alice):
    response = as_alice.get("/api/operation-types")
    assert response.status_code == 200
    types = {t["key"]: t for t in response.json()}
    assert {"noop", "demo.sleep"} <= set(types)
    assert types["noop"]["params"] == []
    assert types["noop"]["label"] == "No-op"
    sleep = types["demo.sleep"]
    assert sleep["label"] == "Demo: sleep" and sleep["description"] and sleep["items_help"]
    params = {p["name"]: p for p in sleep["params"]}
    assert list(params) == ["duration_ms", "failure_rate", "seed", "fail_attempts"]
    assert {k: params["duration_ms"][k] for k in ("type", "required", "default")} == {
        "type": "integer",
        "required": False,
        "default": 100,
    }
    assert (params["failure_rate"]["default"], params["failure_rate"]["label"]) == (0, "Failure probability")
    assert (params["seed"]["type"], params["seed"]["required"], params["seed"]["default"]) == ("integer", False, None)
    assert params["seed"]["help"] == "Same seed, same failures."
    assert (params["fail_attempts"]["type"], params["fail_attempts"]["default"]) == ("integer", 0)


def test_a_float_parameter_is_described_as_a_number(as_alice):
    sleep = next(t for t in as_alice.get("/api/operation-types").json() if t["key"] == "demo.sleep")
    failure_rate = next(p for p in sleep["params"] if p["name"] == "failure_rate")
    assert failure_rate["type"] == "number"


def test_stats_and_operation_types_need_credentials(db):
    assert_error(Client().get("/api/stats"), 401)
    assert_error(Client().get("/api/operation-types"), 401)


# --- schema and docs ----------------------------------------------------------------------------


def test_the_openapi_schema_describes_batch_creation(db):
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    create = schema["paths"]["/api/batches"]["post"]
    assert {"201", "422", "401", "413", "429"} <= set(create["responses"])
    assert "requestBody" in create
    for path in (
        "/api/batches/{batch_id}",
        "/api/batches/{batch_id}/progress",
        "/api/batches/{batch_id}/operations",
        "/api/batches/{batch_id}/results",
        "/api/batches/{batch_id}/results.csv",
        "/api/batches/{batch_id}/operations.csv",
        "/api/batches/{batch_id}/analytics",
        "/api/batches/{batch_id}/cancel",
        "/api/batches/cleanup",
        "/api/stats",
        "/api/operation-types",
    ):
        assert path in schema["paths"], path
    assert "delete" in schema["paths"]["/api/batches/{batch_id}"]
    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())


def test_the_docs_page_needs_no_cdn(db):
    response = Client().get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "openapi.json" in html
    assert "cdn." not in html


def test_a_misspelt_option_is_refused_not_ignored(as_alice):
    response = as_alice.post(BATCHES, body(max_paralel=8))
    assert response.status_code == 422
    assert "max_paralel" in response.json()["errors"]
    assert not Batch.objects.exists()
