"""`pipeline.http` (the HTTP pipeline call): templates, status codes, failures that say what
went wrong, validation at creation, and whole batches on real workers and from the command line."""

import re
import socket
import time

import pytest
from werkzeug import Response

from jobs import services
from jobs.errors import InvalidInput
from jobs.optypes import load_builtin_types
from jobs.optypes.base import OperationFailure, PermanentFailure
from jobs.optypes.http import client as http
from tests.conftest import run_operation, run_operation_with_rows
from tests.databases import run_inline
from tests.invariants import assert_counters_match_rows
from tests.test_commands import created_batch, run_batch
from tests.test_engine import wait_until_finished


def call(label: str = "dim_customer", **params):
    return run_operation("pipeline.http", label, **params)


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- one call -----------------------------------------------------------------------------------


def test_it_posts_the_rendered_body_and_headers_and_keeps_the_json_answer(httpserver):
    httpserver.expect_request(
        "/pipelines/dim_customer/run",
        method="POST",
        json={"pipeline": "dim_customer", "retries": 2, "note": "dim_customer in prod"},
        headers={"X-Env": "prod", "Authorization": "Bearer t0k"},
    ).respond_with_json({"run_id": 7, "state": "started"})
    result = call(
        url=httpserver.url_for("/pipelines/{label}/run"),
        headers={"X-Env": "{env}", "Authorization": "Bearer t0k"},
        body={"pipeline": "{label}", "retries": "{retries}", "note": "{label} in {env}"},
        env="prod",
        retries=2,
    )
    assert result == {"run_id": 7, "state": "started"}
    assert len(httpserver.log) == 1


def test_url_values_are_percent_encoded_unless_marked_with_plus():
    values = {"label": "sales/eu 2024", "base": "https://host:8443/api", "n": 3}
    assert http.render_url("{+base}/pipelines/{label}/run?n={n}", values) == (
        "https://host:8443/api/pipelines/sales%2Feu%202024/run?n=3"
    )


def test_a_body_placeholder_alone_keeps_its_value_type_and_inside_text_becomes_text():
    values = {"label": "a", "n": 3, "flags": {"full": True}}
    assert http.render_json(
        {"n": "{n}", "flags": "{flags}", "text": "#{n} of {label}", "list": ["{label}", 1]}, values
    ) == {
        "n": 3,
        "flags": {"full": True},
        "text": "#3 of a",
        "list": ["a", 1],
    }


def test_get_sends_no_body_and_the_method_is_case_insensitive(httpserver):
    httpserver.expect_request("/status/a", method="GET", data=b"").respond_with_json([1, 2])
    assert call("a", url=httpserver.url_for("/status/{label}"), method="get") == {"value": [1, 2]}


def test_a_non_json_answer_keeps_the_status_and_the_start_of_the_text(httpserver):
    httpserver.expect_request("/run").respond_with_data("x" * 5000, status=202, content_type="text/plain")
    assert call(url=httpserver.url_for("/run")) == {"status_code": 202, "text": "x" * 2000}


def test_a_4xx_answer_is_a_permanent_http_status_failure_with_a_body_excerpt(httpserver):
    httpserver.expect_request("/pipelines/nope/run").respond_with_data(
        '{"detail": "no pipeline nope"}', status=404, content_type="application/json"
    )
    with pytest.raises(PermanentFailure) as caught:
        call("nope", url=httpserver.url_for("/pipelines/{label}/run"))
    assert caught.value.error_type == "HTTPStatus"
    message = str(caught.value)
    assert message.startswith("HTTP 404 NOT FOUND from POST http://127.0.0.1:")
    assert message.endswith('/pipelines/nope/run: {"detail": "no pipeline nope"}')


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_5xx_408_and_429_answers_are_retryable_failures(httpserver, status):
    httpserver.expect_request("/run").respond_with_data("busy", status=status)
    with pytest.raises(OperationFailure) as caught:
        call(url=httpserver.url_for("/run"))
    assert not isinstance(caught.value, PermanentFailure)
    assert caught.value.error_type == "HTTPStatus"
    assert f"HTTP {status} " in str(caught.value) and str(caught.value).endswith(": busy")


def test_only_the_expected_status_codes_pass(httpserver):
    httpserver.expect_request("/run").respond_with_json({"ok": True}, status=200)
    assert call(url=httpserver.url_for("/run"), expected_status="200,202") == {"ok": True}
    with pytest.raises(PermanentFailure, match="HTTP 200 OK"):
        call(url=httpserver.url_for("/run"), expected_status=202)


def test_a_redirect_is_not_followed_and_says_where_it_pointed(httpserver):
    httpserver.expect_request("/old").respond_with_data("", status=302, headers={"Location": "/new"})
    with pytest.raises(PermanentFailure, match=r"HTTP 302 FOUND .* \(redirect to /new; redirects are not followed\)"):
        call(url=httpserver.url_for("/old"))


def test_an_unreachable_endpoint_fails_with_a_retryable_connect_error():
    url = f"http://127.0.0.1:{closed_port()}/run"
    with pytest.raises(OperationFailure) as caught:
        call(url=url)
    assert not isinstance(caught.value, PermanentFailure)
    assert caught.value.error_type == "ConnectError"
    assert str(caught.value).startswith(f"POST {url}: cannot connect (")


def test_each_call_adds_a_result_row_with_status_time_and_the_answers_scalar_fields(httpserver):
    answer = {"run_id": 7, "state": "started", "note": "x" * 500, "ok": True, "nested": {"a": 1}, "tags": [1]}
    answer |= {f"extra_{n}": n for n in range(30)}
    httpserver.expect_request("/run").respond_with_json(answer, status=201)
    result, rows = run_operation_with_rows("pipeline.http", "p1", url=httpserver.url_for("/run"))
    assert result == answer
    [row] = rows
    assert row["status_code"] == 201 and isinstance(row["elapsed_ms"], int) and row["elapsed_ms"] >= 0
    # Scalars only, in order, bounded in number and length.
    assert list(row)[:6] == ["status_code", "elapsed_ms", "run_id", "state", "note", "ok"]
    assert row["note"] == "x" * http.ROW_TEXT_CHARS and "nested" not in row and "tags" not in row
    assert len(row) == 2 + http.ROW_FIELDS_MAX
    httpserver.expect_request("/text").respond_with_data("plain words", status=200)
    _, [plain] = run_operation_with_rows("pipeline.http", "p2", url=httpserver.url_for("/text"), method="GET")
    assert set(plain) == {"status_code", "elapsed_ms"}


def test_a_finished_pipeline_batch_shows_its_result_rows_on_the_batch_page(
    transactional_db, redis_clean, alice, client, httpserver
):
    """It showed "No result rows yet": calls kept their answer as the result and added no row."""
    httpserver.expect_request(re.compile(r"^/pipelines/.+")).respond_with_json({"run_id": 9, "state": "done"})
    batch = services.batch_create(
        owner=alice,
        type="pipeline.http",
        name="pipelines",
        items=["dim_a", "dim_b"],
        params={"url": httpserver.url_for("/pipelines/{label}")},
    )
    batch = run_inline(batch)
    assert batch.status == "completed"
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/?tab=results").content.decode()
    assert "No result rows yet" not in page
    assert "2 rows from the operations" in page and ">status_code<" in page and ">dim_b<" in page


def test_a_slow_endpoint_fails_after_the_http_timeout(httpserver):
    httpserver.expect_request("/slow").respond_with_handler(lambda request: time.sleep(1) or Response("late"))
    started = time.monotonic()
    with pytest.raises(OperationFailure) as caught:
        call(url=httpserver.url_for("/slow"), timeout_s=0.2)
    assert time.monotonic() - started < 0.9
    assert caught.value.error_type == "HTTPTimeout"
    assert "no answer within 0.2 s" in str(caught.value)


def test_a_placeholder_without_a_value_at_run_time_is_a_clear_permanent_failure():
    # Creation refuses such batches; this is the last line for params changed behind its back.
    with pytest.raises(PermanentFailure) as caught:
        call(url="https://example.invalid/{label}/{stage}")
    assert caught.value.error_type == "Placeholder"
    assert str(caught.value).startswith("No value for placeholder(s) {stage}; known: ")


# --- validation at creation -----------------------------------------------------------------------


def create(owner, items=("a", "b"), **params):
    return services.batch_create(owner=owner, type="pipeline.http", name="http", items=list(items), params=params)


@pytest.mark.parametrize(
    "params, path, message",
    [
        ({}, "params.url", "This field is required."),
        ({"url": "ftp://host/{label}"}, "params.url", "Must start with http:// or https://"),
        ({"url": "https://host/{ label }"}, "params.url", "stray brace"),
        ({"url": "https://host/{label.id}"}, "params.url", "stray brace"),
        ({"url": "https://host/{stage}/{label}"}, "params.url", "No value for placeholder(s) {stage}"),
        ({"url": "https://host/", "body": {"x": "{nope}"}}, "params.body", "No value for placeholder(s) {nope}"),
        ({"url": "https://host/", "method": "TRACE"}, "params.method", "Select a valid choice"),
        ({"url": "https://host/", "headers": ["X"]}, "params.headers", "JSON object of header names"),
        ({"url": "https://host/", "headers": {"X": {"y": 1}}}, "params.headers", "JSON object of header names"),
        ({"url": "https://host/", "expected_status": "2xx"}, "params.expected_status", "'2xx' is not a status code"),
        ({"url": "https://host/", "expected_status": "299-200"}, "params.expected_status", "low to high"),
        ({"url": "https://host/", "timeout_s": 0}, "params.timeout_s", "greater than or equal to 0.1"),
    ],
)
def test_bad_params_are_refused_at_creation_with_the_field_path(alice, params, path, message):
    with pytest.raises(InvalidInput) as caught:
        create(alice, **params)
    assert any(message in text for text in caught.value.errors.get(path, [])), caught.value.errors


def test_a_placeholder_every_item_fills_is_accepted_and_normalised_params_are_stored(alice):
    batch = create(
        alice,
        items=[{"label": "a", "params": {"stage": "dev"}}, {"label": "b", "params": {"stage": "prod"}}],
        url="https://host/{stage}/{label}",
        method="put",
        expected_status="201, 200-204",
    )
    assert batch.params == {
        "url": "https://host/{stage}/{label}",
        "method": "PUT",
        "expected_status": "201,200-204",
        "timeout_s": 30.0,
    }
    assert list(batch.operations.values_list("params", flat=True)) == [{"stage": "dev"}, {"stage": "prod"}]


def test_a_placeholder_some_items_lack_is_refused_naming_the_field(alice):
    with pytest.raises(InvalidInput) as caught:
        create(alice, items=["a", {"label": "b", "params": {"stage": "prod"}}], url="https://host/{stage}/{label}")
    assert caught.value.errors == {
        "params.url": [
            "No value for placeholder(s) {stage}: give stage as a parameter of the batch or in the params of every item."
        ]
    }


def test_both_http_types_are_listed_by_the_api_with_their_params(client, alice):
    client.force_login(alice)
    types = {t["key"]: t for t in client.get("/api/operation-types").json()}
    pipeline, workbench = types["pipeline.http"], types["workbench.job"]
    assert pipeline["items_help"] and workbench["items_help"] and pipeline["description"]
    params = {p["name"]: p for p in pipeline["params"]}
    assert list(params) == ["url", "method", "headers", "body", "expected_status", "timeout_s"]
    assert (params["url"]["required"], params["method"]["default"], params["expected_status"]["default"]) == (
        True,
        "POST",
        "200-299",
    )
    assert params["body"]["type"] == "json"
    assert {"submit_url", "status_url", "job_id_key", "state_key", "cancel_url", "deadline_s"} <= {
        p["name"] for p in workbench["params"]
    }


def test_loading_the_builtin_types_twice_is_harmless():
    load_builtin_types()
    load_builtin_types()


# --- whole batches ----------------------------------------------------------------------------------


@pytest.mark.workers
def test_a_pipeline_batch_on_real_workers_keeps_answers_and_fails_clearly(alice, workers, httpserver):
    httpserver.expect_request("/pipelines/dim_customer/run").respond_with_json({"run_id": 1})
    httpserver.expect_request("/pipelines/missing/run").respond_with_json({"detail": "unknown pipeline"}, status=404)
    httpserver.expect_oneshot_request("/pipelines/flaky/run").respond_with_data("overloaded", status=503)
    httpserver.expect_request("/pipelines/flaky/run").respond_with_json({"run_id": 3})
    unreachable = f"http://127.0.0.1:{closed_port()}"
    workers.start(2)
    batch = services.batch_create(
        owner=alice,
        type="pipeline.http",
        name="pipelines",
        items=["dim_customer", "missing", "flaky", {"label": "offline", "params": {"base": unreachable}}],
        params={"url": "{+base}/pipelines/{label}/run", "base": f"http://127.0.0.1:{httpserver.port}", "timeout_s": 5},
        max_parallel=2,
        max_retries=1,
        retry_backoff_s=0,
    )
    wait_until_finished(batch)
    operations = {op.label: op for op in batch.operations.all()}
    assert batch.status == "partial_success"
    assert (operations["dim_customer"].status, operations["dim_customer"].result) == ("completed", {"run_id": 1})
    assert (operations["flaky"].status, operations["flaky"].attempts, operations["flaky"].result) == (
        "completed",
        2,
        {"run_id": 3},
    )
    missing = operations["missing"]
    # A 4xx is not retried although the batch allows a retry.
    assert (missing.status, missing.error_type, missing.attempts) == ("failed", "HTTPStatus", 1)
    assert missing.error.startswith("HTTP 404 NOT FOUND from POST ") and "unknown pipeline" in missing.error
    offline = operations["offline"]
    assert (offline.status, offline.error_type, offline.attempts) == ("failed", "ConnectError", 2)
    assert offline.error.startswith(f"POST {unreachable}/pipelines/offline/run: cannot connect")
    assert_counters_match_rows(batch)


@pytest.mark.workers
def test_batch_create_runs_a_pipeline_http_batch_from_the_command_line(staff, workers, httpserver):
    httpserver.expect_request("/pipelines/a/run", json={"id": "a", "full": True}).respond_with_json({"ok": "a"})
    httpserver.expect_request("/pipelines/b/run", json={"id": "b", "full": True}).respond_with_json({"ok": "b"})
    workers.start(1)
    result = run_batch(
        "create", "--type", "pipeline.http", "--item", "a", "--item", "b",
        "--param", f"url={httpserver.url_for('/pipelines/{label}/run')}",
        "--param", 'body={"id": "{label}", "full": "{full}"}', "--param", "full=true",
        "--param", "expected_status=200,201", "--wait",
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    batch = created_batch(result.stdout)
    assert batch.status == "completed"
    assert sorted(batch.operations.values_list("result", flat=True), key=str) == [{"ok": "a"}, {"ok": "b"}]
    assert batch.params["expected_status"] == "200,201" and batch.params["full"] is True
