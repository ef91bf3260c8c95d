"""Bad input gets a clear 4xx, a form error or a JSON error, never a 500, on SQLite and PostgreSQL:
NUL characters, oversized bodies and CSV cells, booleans where numbers go, wrong methods, reused
Idempotency-Keys, and what the OpenAPI schema says about it; sign-in throttling and token answers."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.utils import timezone

from jobs import services
from jobs.errors import InvalidInput
from jobs.items import parse_items_text
from jobs.models import Batch, BatchStatus, Operation
from jobs.services import tokens
from tests.test_api import BATCHES, ApiClient, assert_error, body, make_batch, nothing_written
from tests.test_views import valid_form


@pytest.fixture(autouse=True)
def _fresh_rate_limit(redis_clean):
    yield


@pytest.fixture
def as_alice(alice) -> ApiClient:
    return ApiClient(alice)


@pytest.fixture
def alice_page(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def staff_page(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


# --- NUL characters -----------------------------------------------------------------------------------


def test_a_nul_in_the_history_filters_is_a_400_not_a_server_error(alice_page, alice):
    make_batch(alice)
    for query in ("q=%00", "q=a%00b", "type=%00", "status=%00", "created_after=%00", "page=%00"):
        response = alice_page.get(f"/batches/?{query}")
        assert response.status_code == 400, (query, response.status_code)
        assert "NUL" in response.content.decode()


def test_a_nul_in_an_api_filter_is_a_422_naming_the_parameter(as_alice, alice):
    make_batch(alice)
    for name in ("q", "type", "created_after", "status"):
        error = assert_error(as_alice.get(f"{BATCHES}?{name}=x%00"), 422, name)
        assert "NUL" in error["message"]


def test_a_nul_in_the_admin_search_is_a_400(staff_page, alice):
    make_batch(alice)
    assert staff_page.get("/admin/jobs/batch/?q=%00").status_code == 400
    assert staff_page.get("/admin/jobs/batch/").status_code == 200


def test_a_nul_in_an_address_matches_nothing(as_alice, alice, alice_page):
    batch = make_batch(alice)
    response = as_alice.get(f"{BATCHES}/{batch.pk}/artifacts/a%00b.csv")
    assert_error(response, 404)
    assert alice_page.get(f"/batches/{batch.pk}/%00/").status_code == 404


@pytest.mark.parametrize(
    "changes, path",
    [
        ({"name": "a\x00b"}, "name"),
        ({"description": "\x00"}, "description"),
        ({"items": ["ok", "a\x00b"]}, "items[1]"),
        ({"items": [{"label": "x", "params": {"duration_ms": 1, "note\x00": 1}}]}, "items[0].params"),
        ({"params": {"duration_ms": "1\x00"}}, "params.duration_ms"),
    ],
)
def test_a_nul_in_a_create_body_is_a_422_at_its_path(as_alice, changes, path):
    error = assert_error(as_alice.post(BATCHES, body(**changes)), 422, path)
    assert "NUL" in " ".join(error["errors"][path])
    assert nothing_written()


def test_the_services_refuse_nul_in_labels_from_any_front(alice):
    with pytest.raises(InvalidInput) as caught:
        services.batch_create(owner=alice, type="demo.sleep", name="n", items=["a\x00"])
    assert "items[0]" in caught.value.errors
    with pytest.raises(InvalidInput) as caught:
        parse_items_text("label,duration_ms\nfine,1\nbad\x00,2\n")
    assert "items[1].label" in caught.value.errors
    with pytest.raises(InvalidInput) as caught:
        parse_items_text('["fine", {"label": "bad\\u0000"}]')
    assert "items[1].label" in caught.value.errors
    assert Batch.objects.count() == 0


def test_a_json_parameter_whose_text_decodes_to_a_nul_is_refused(alice):
    with pytest.raises(InvalidInput) as caught:
        services.batch_create(
            owner=alice,
            type="pipeline.http",
            name="n",
            items=["a"],
            params={"url": "http://127.0.0.1:1/x", "body": '{"k": "\\u0000"}'},
        )
    assert any("NUL" in " ".join(messages) for messages in caught.value.errors.values()), caught.value.errors


def test_an_uploaded_csv_with_a_nul_label_is_a_form_error(alice_page):
    upload = SimpleUploadedFile("items.csv", b"label\nfine\nbad\x00label\n", content_type="text/csv")
    response = alice_page.post("/batches/new/demo.sleep/", {**valid_form(items=""), "items_file": upload})
    assert response.status_code == 422
    assert "NUL" in " ".join(response.context["items_form"].errors["items_file"])
    assert Batch.objects.count() == 0


# --- sizes ----------------------------------------------------------------------------------------------


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
def test_a_body_over_the_limit_is_a_413_json_that_gives_the_limit(as_alice):
    big = body(items=["x" * 100] * 100)
    response = as_alice.post(BATCHES, big)
    error = assert_error(response, 413)
    assert "4096 bytes" in error["message"]
    assert nothing_written()


def test_the_default_limit_answers_a_50_mb_body_with_a_413(as_alice):
    response = as_alice.post_raw(BATCHES, '{"type": "noop", "name": "n", "items": ["' + "x" * 50_000_000 + '"]}')
    error = assert_error(response, 413)
    assert "10485760 bytes" in error["message"]


def test_a_csv_cell_over_the_csv_field_limit_is_an_error_on_the_file_field(alice_page):
    content = b"label,note\nbig," + b"x" * 131_073 + b"\n"
    upload = SimpleUploadedFile("items.csv", content, content_type="text/csv")
    response = alice_page.post("/batches/new/demo.sleep/", {**valid_form(items=""), "items_file": upload})
    assert response.status_code == 422
    errors = " ".join(response.context["items_form"].errors["items_file"])
    assert "field larger than field limit" in errors
    assert Batch.objects.count() == 0


# --- booleans are not numbers --------------------------------------------------------------------------


def test_cleanup_refuses_a_boolean_days_to_keep_and_deletes_nothing(as_alice, alice):
    batch = make_batch(alice)
    Batch.objects.filter(pk=batch.pk).update(status=BatchStatus.COMPLETED, finished_at=timezone.now())
    for value in (False, True, None, "0", 1.5):
        assert_error(as_alice.post(f"{BATCHES}/cleanup", {"days_to_keep": value}), 422, "days_to_keep")
    assert Batch.objects.filter(pk=batch.pk).exists()
    assert as_alice.post(f"{BATCHES}/cleanup", {"days_to_keep": 0.0}).json() == {"deleted": 1}


@pytest.mark.parametrize("item", [True, False, None])
def test_a_boolean_or_null_item_is_refused(as_alice, item):
    assert_error(as_alice.post(BATCHES, body(items=["a", item])), 422, "items[1]")
    assert nothing_written()


@pytest.mark.parametrize("option", ["max_parallel", "max_retries", "timeout_s", "retry_backoff_s"])
def test_a_boolean_option_is_refused(as_alice, option):
    assert_error(as_alice.post(BATCHES, body(**{option: True})), 422, option)
    assert nothing_written()


def test_a_whole_float_is_an_integer_and_numbers_are_labels(as_alice):
    response = as_alice.post(BATCHES, body(items=[1, 2.5, "c"], max_parallel=2.0))
    assert response.status_code == 201, response.content
    assert response.json()["max_parallel"] == 2
    assert list(Batch.objects.get().operations.values_list("label", flat=True)) == ["1", "2.5", "c"]


# --- every API error is JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, allowed",
    [("put", BATCHES, "GET, POST"), ("get", f"{BATCHES}/cleanup", "POST"), ("patch", "/api/stats", "GET")],
)
def test_a_wrong_method_is_a_405_json_with_the_allowed_ones(as_alice, method, path, allowed):
    response = getattr(as_alice.client, method)(path, **as_alice.headers)
    error = assert_error(response, 405)
    assert set(response["Allow"].split(", ")) == set(allowed.split(", "))
    assert all(name in error["message"] for name in allowed.split(", "))


def test_idempotency_key_reuse_is_documented_as_a_409(as_alice):
    schema = as_alice.get("/api/openapi.json").json()
    create = schema["paths"][BATCHES]["post"]
    header = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and "409" in header["description"]
    assert "409" in create["responses"]


# --- OpenAPI --------------------------------------------------------------------------------------------


def test_the_schema_states_types_sort_dates_and_required_fields(as_alice):
    schema = as_alice.get("/api/openapi.json").json()
    batch_in = schema["components"]["schemas"]["BatchIn"]
    assert {"demo.sleep", "noop", "sql.workflow"} <= set(batch_in["properties"]["type"]["enum"])
    assert {"type", "name"} <= set(batch_in["required"])
    # Items, unless a `select` of instances stands for them.
    assert batch_in["anyOf"] == [{"required": ["items"]}, {"required": ["select"]}]
    assert batch_in["properties"]["name"]["minLength"] == 1
    assert batch_in["properties"]["items"]["minItems"] == 1
    listing = {p["name"]: p for p in schema["paths"][BATCHES]["get"]["parameters"]}
    assert "demo.sleep" in listing["type"]["schema"]["enum"]
    for name in ("created_after", "created_before"):
        formats = {branch.get("format") for branch in listing[name]["schema"]["anyOf"]}
        assert formats == {"date-time", "date"}
    results = {p["name"]: p for p in schema["paths"][BATCHES + "/{batch_id}/results"]["get"]["parameters"]}
    assert "Free-form" in results["sort"]["description"]
    cleanup = schema["components"]["schemas"]["CleanupIn"]["properties"]["days_to_keep"]
    assert cleanup["minimum"] == 0 and cleanup["type"] == "integer"


@pytest.mark.parametrize(
    "value", ["5312-07-29T22:36:56.7+17:11", "0001-01-01T00:00:00-05:00", "9999-12-31", "9999-12-31T23:59:59-12:00"]
)
def test_a_date_filter_at_the_edges_answers_without_a_server_error(as_alice, alice, value):
    make_batch(alice)
    for name in ("created_after", "created_before"):
        response = as_alice.get(BATCHES, {name: value})
        assert response.status_code in (200, 422), (name, value, response.status_code)
        if response.status_code == 422:
            assert "supported range" in " ".join(response.json()["errors"][name])
    assert as_alice.get(BATCHES, {"created_after": "5312-07-29T22:36:56.7+17:11"}).json()["count"] == 0
    assert as_alice.get(BATCHES, {"created_before": "5312-07-29T22:36:56.7+17:11"}).json()["count"] == 1


def test_an_unknown_type_filter_and_an_empty_date_are_422s(as_alice):
    assert_error(as_alice.get(BATCHES, {"type": "nope"}), 422, "type")
    assert_error(as_alice.get(BATCHES, {"type": ""}), 422, "type")
    assert_error(as_alice.get(BATCHES, {"created_before": ""}), 422, "created_before")


# --- API tokens -----------------------------------------------------------------------------------------


def test_a_bad_token_answers_alike_whether_or_not_its_prefix_exists(alice):
    token, key = tokens.token_create(user=alice, name="real")
    revoked, revoked_key = tokens.token_create(user=alice, name="old")
    tokens.token_revoke(token=revoked)
    candidates = [
        key[:12] + "x" * (len(key) - 12),  # a real prefix, a wrong rest
        "bst_" + "y" * 43,  # the right shape, no such prefix
        "not-even-the-shape",
        revoked_key,
        key + "x",
    ]
    answers = set()
    for candidate in candidates:
        response = Client().get(BATCHES, HTTP_AUTHORIZATION=f"Bearer {candidate}")
        answers.add((response.status_code, response.content, response.get("WWW-Authenticate")))
    answers.add(
        (lambda r: (r.status_code, r.content, r.get("WWW-Authenticate")))(Client().get(BATCHES))  # no token at all
    )
    assert len(answers) == 1, answers
    assert next(iter(answers))[0] == 401
    assert Client().get(BATCHES, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200


# --- sign-in throttling ---------------------------------------------------------------------------------


def sign_in(client: Client, url: str, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_repeated_failed_sign_ins_lock_the_username_with_the_time_to_wait(alice, staff, url):
    client = Client()
    username = "sam" if url.startswith("/admin") else "alice"
    for attempt in range(4):
        response = sign_in(client, url, username, "wrong", address=f"10.0.0.{attempt + 1}")
        assert response.status_code == 200, attempt  # the form again, with its error
    assert sign_in(client, url, username, "wrong", address="10.0.0.5").status_code == 429  # the 5th
    # From yet another address, even with the right password.
    response = sign_in(client, url, username, f"{username}-password", address="10.9.9.9")
    assert response.status_code == 429
    text = " ".join(response.content.decode().split())
    assert "Too many failed sign-ins" in text and "Try again in 15 minutes" in text
    assert response["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session


def test_failed_sign_ins_from_one_address_lock_that_address_for_every_username(alice, bob):
    client = Client()
    for name in ("u1", "u2", "u3", "u4"):
        assert sign_in(client, "/accounts/login/", name, "wrong", address="10.1.1.1").status_code == 200
    assert sign_in(client, "/accounts/login/", "u5", "wrong", address="10.1.1.1").status_code == 429
    assert sign_in(client, "/accounts/login/", "bob", "bob-password", address="10.1.1.1").status_code == 429
    # Another address is not locked out for bob.
    assert sign_in(client, "/accounts/login/", "bob", "bob-password", address="10.2.2.2").status_code == 302


def test_a_successful_sign_in_clears_the_failures(alice):
    client = Client()
    for _ in range(4):
        sign_in(client, "/accounts/login/", "alice", "wrong")
    assert sign_in(client, "/accounts/login/", "alice", "alice-password").status_code == 302
    client.logout()
    for _ in range(4):
        assert sign_in(client, "/accounts/login/", "alice", "wrong").status_code == 200
    assert sign_in(client, "/accounts/login/", "alice", "alice-password").status_code == 302


def test_a_nul_in_the_sign_in_form_is_a_form_error(alice):
    response = Client().post("/accounts/login/", {"username": "ali\x00ce", "password": "x"})
    assert response.status_code == 200
    assert "Null characters are not allowed" in json.dumps(response.context["form"].errors)


# --- the sweep: odd values everywhere, no server error -------------------------------------------------

ODD_TEXT = [
    "\x00",
    "a\x00b",
    "x" * 5000,
    "-1",
    "0",
    "1e309",
    "NaN",
    "Infinity",
    "%",
    "_",
    "\\",
    "'; DROP TABLE jobs_batch; --",
    "../../etc/passwd",
    "2024-13-45",
    "2024-02-30T25:61:61",
    "9999-12-31T23:59:59+99:00",
    "9999-12-31",
    "5312-07-29T22:36:56.7+17:11",
    "0001-01-01T00:00:00-05:00",
    "0001-01-01",
    "😀",
    "\u202e\ufeff",
    "null",
    "[]",
    "{}",
    "-",
    "--operation",
]
ODD_JSON = [None, True, False, [], {}, "", "x" * 20_000, -1, 10**30, 1.5e308, "\x00", [[[[[]]]]], {"a": {"b": None}}]
QUERY_NAMES = ["q", "status", "type", "created_after", "created_before", "page", "tab", "sort", "limit", "offset"]


@pytest.fixture
def partial_batch(alice) -> Batch:
    batch = make_batch(alice, items=("a", "b", "c"))
    claimed = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_complete(claim=claimed, duration_ms=5)
    claimed = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_fail(claim=claimed, error="boom", error_type="Boom", duration_ms=5)
    batch.refresh_from_db()
    return batch


def test_the_pages_answer_odd_query_values_without_a_server_error(alice_page, partial_batch):
    detail = f"/batches/{partial_batch.pk}/"
    # One parameter at a time where it is read (a bad date alone would hide the text filter's query),
    # then all at once on every page.
    each = {
        "/batches/": ["q", "status", "type", "created_after", "created_before", "page"],
        detail: ["tab", "status", "sort", "page"],
    }
    for page, names in each.items():
        for name in names:
            for value in ODD_TEXT:
                response = alice_page.get(page, {name: value})
                assert response.status_code < 500, (page, name, value, response.status_code)
    for page in ["/", "/batches/", detail, "/stats/", "/batches/new/", "/batches/new/noop/"]:
        for value in ODD_TEXT:
            response = alice_page.get(page, {name: value for name in QUERY_NAMES})
            assert response.status_code < 500, (page, value, response.status_code)
    for tab in ("operations", "results", "analytics", "timeline"):
        for value in ODD_TEXT:
            response = alice_page.get(detail, {"tab": tab, "sort": value, "page": value, "status": value})
            assert response.status_code in (200, 400), (tab, value, response.status_code)


def test_the_create_form_answers_odd_values_with_form_errors(alice_page):
    fields = list(valid_form())
    for field in fields:
        for value in ODD_TEXT:
            response = alice_page.post("/batches/new/demo.sleep/", valid_form(**{field: value}))
            assert response.status_code in (302, 422), (field, value, response.status_code)
    names_and_labels = list(Batch.objects.values_list("name", flat=True)) + list(
        Operation.objects.values_list("label", flat=True)
    )
    assert not any("\x00" in text for text in names_and_labels)


def test_the_api_answers_odd_query_values_without_a_server_error(as_alice, partial_batch):
    base = f"{BATCHES}/{partial_batch.pk}"
    each = {
        BATCHES: ["q", "status", "type", "created_after", "created_before", "limit", "offset"],
        f"{base}/operations": ["status", "limit", "offset"],
        f"{base}/results": ["sort", "limit", "offset"],
        f"{base}/results.csv": ["sort"],
    }
    requests = [(endpoint, {name: value}) for endpoint, names in each.items() for name in names for value in ODD_TEXT]
    endpoints = [*each, base, f"{base}/progress", f"{base}/operations.csv", f"{base}/analytics", f"{base}/artifacts"]
    requests += [(e, {name: value for name in QUERY_NAMES}) for e in [*endpoints, "/api/stats"] for value in ODD_TEXT]
    for endpoint, query in requests:
        response = as_alice.get(endpoint, query)
        assert response.status_code < 500, (endpoint, query, response.status_code)
        if response.status_code >= 400:
            assert response["Content-Type"].startswith("application/json"), (endpoint, query)


def test_the_api_answers_odd_body_values_with_json_4xx(as_alice, partial_batch):
    fields = list(body()) + ["params", "description", "stop_on_error", "max_retries", "timeout_s", "priority"]
    for field in fields:
        for value in ODD_JSON:
            response = as_alice.post(BATCHES, body(**{field: value}))
            assert response.status_code < 500, (field, value, response.status_code)
            assert response["Content-Type"].startswith("application/json")
    for value in ODD_JSON:
        for changes in (
            {"items": [value]},
            {"items": [{"label": value}]},
            {"items": [{"label": "a", "params": value}]},
        ):
            response = as_alice.post(BATCHES, body(**changes))
            assert response.status_code < 500, (changes, response.status_code)
        response = as_alice.post(f"{BATCHES}/cleanup", {"days_to_keep": value})
        assert response.status_code == 422, (value, response.status_code)
    for raw in ("", "{", "[]", "null", '"text"', "\x00", '{"type": "noop"}' * 3, '"\\ud800"'):
        response = as_alice.post_raw(BATCHES, raw)
        assert 400 <= response.status_code < 500, (raw, response.status_code)
