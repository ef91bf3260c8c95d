"""Pages: access, rendering, the create form and its errors, actions."""

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from jobs import services
from jobs.models import Batch, BatchStatus, Operation, OperationStatus

PAGES = ["/", "/batches/", "/batches/new/", "/batches/new/demo.sleep/", "/stats/"]


def make_batch(owner, count=3, name="nightly", type="demo.sleep", **options) -> Batch:
    return services.batch_create(
        owner=owner, type=type, name=name, items=[f"item-{n}" for n in range(count)], **options
    )


def finish(batch: Batch, status=OperationStatus.COMPLETED) -> Batch:
    """Record every operation's outcome through the services, as workers would."""
    while (claim := services.operation_claim_next(batch_id=str(batch.pk), worker="test")) and isinstance(
        claim, services.Claim
    ):
        if status == OperationStatus.COMPLETED:
            services.operation_complete(claim=claim, duration_ms=5, result={})
        else:
            services.operation_fail(claim=claim, error="boom 42", error_type="Boom", duration_ms=5, retryable=False)
    batch.refresh_from_db()
    return batch


@pytest.fixture
def as_alice(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def as_bob(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.mark.parametrize("url", PAGES)
def test_every_page_requires_login(db, url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders_for_a_user(as_alice, url):
    response = as_alice.get(url)
    assert response.status_code == 200
    assert b'<main id="content">' in response.content


def test_the_login_page_has_labelled_fields(db):
    content = Client().get("/accounts/login/").content.decode()
    assert '<label for="id_username">Username</label>' in content
    assert '<label for="id_password">Password</label>' in content


def test_the_dashboard_shows_own_active_batches_and_not_others(as_alice, alice, bob):
    mine, theirs = make_batch(alice, name="alice-batch"), make_batch(bob, name="bob-batch")
    content = as_alice.get("/").content.decode()
    assert f"batch-{mine.pk}-card" in content
    assert f"batch-{theirs.pk}-card" not in content
    assert 'ws-connect="/ws/dashboard/"' in content


def test_staff_see_everyones_batches(staff, alice):
    batch = make_batch(alice)
    client = Client()
    client.force_login(staff)
    assert f"batch-{batch.pk}-card".encode() in client.get("/").content
    assert client.get(f"/batches/{batch.pk}/").status_code == 200


def test_the_dashboard_lists_finished_batches_apart(as_alice, alice):
    done = finish(make_batch(alice, name="finished-one"))
    content = as_alice.get("/").content.decode()
    recent = content.split('id="recent-batches"')[1]
    assert "finished-one" in recent and f"batch-{done.pk}-card" not in content


def test_another_users_batch_is_a_404_on_the_page_and_every_action(as_bob, alice):
    batch = make_batch(alice)
    assert as_bob.get(f"/batches/{batch.pk}/").status_code == 404
    for action in ("cancel", "pause", "resume", "retry", "delete", "run-again"):
        assert as_bob.post(f"/batches/{batch.pk}/{action}/").status_code == 404, action
    batch.refresh_from_db()
    assert batch.status == BatchStatus.QUEUED


def test_the_batch_page_shows_progress_counts_and_operations(as_alice, alice):
    batch = make_batch(alice, count=3)
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_fail(claim=claim, error="disk full", error_type="IOError", duration_ms=1500, retryable=False)
    content = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert f'ws-connect="/ws/batches/{batch.pk}/?tab=operations&amp;page=1&amp;status=&amp;error_type="' in content
    assert 'aria-valuenow="33"' in content
    assert "disk full" in content and "IOError" in content and "1.5 s" in content
    assert content.count('role="row" id="op-') == 3


def test_the_operations_table_pages_by_50_and_filters_by_status(as_alice, alice):
    batch = make_batch(alice, count=120, type="noop")
    page_three = as_alice.get(f"/batches/{batch.pk}/?page=3").content.decode()
    assert page_three.count('role="row" id="op-') == 20 and "Page 3 of 3" in page_three
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_complete(claim=claim, duration_ms=1, result={})
    completed = as_alice.get(f"/batches/{batch.pk}/?status=completed").content.decode()
    assert completed.count('role="row" id="op-') == 1


def test_an_htmx_request_for_a_tab_gets_only_that_fragment(as_alice, alice):
    batch = make_batch(alice, count=2)
    response = as_alice.get(
        f"/batches/{batch.pk}/?tab=operations&status=pending", headers={"HX-Request": "true", "HX-Target": "tab-panel"}
    )
    content = response.content.decode()
    assert content.lstrip().startswith('<section id="tab-panel"')
    assert "<html" not in content and content.count('role="row" id="op-') == 2


def test_the_results_tab_pages_and_sorts_the_result_rows(as_alice, alice):
    batch = make_batch(alice, count=3, type="noop")
    for score in (5, 30, 12):
        claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
        services.operation_complete(claim=claim, duration_ms=1, result={}, rows=[{"table": f"t{score}", "rows": score}])
    content = as_alice.get(f"/batches/{batch.pk}/?tab=results&sort=-rows").content.decode()
    assert "3 rows from the operations" in content
    cells = re.findall(r"<td>(t\d+)</td>", content)
    assert cells == ["t30", "t12", "t5"]
    assert 'aria-sort="descending"' in content


def test_an_unknown_sort_column_falls_back_to_storage_order(as_alice, alice):
    batch = make_batch(alice, count=1, type="noop")
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_complete(claim=claim, duration_ms=1, result={}, rows=[{"a": 1}])
    response = as_alice.get(f"/batches/{batch.pk}/?tab=results&sort=nope")
    assert response.status_code == 200 and "<td>1</td>" in response.content.decode()


def test_the_analytics_tab_shows_percentiles_charts_and_error_groups(as_alice, alice):
    batch = make_batch(alice, count=4, type="noop")
    for duration in (100, 200, 300):
        claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
        services.operation_complete(claim=claim, duration_ms=duration, result={})
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_fail(
        claim=claim, error="timeout after 31 s", error_type="Timeout", duration_ms=400, retryable=False
    )
    content = as_alice.get(f"/batches/{batch.pk}/?tab=analytics").content.decode()
    assert "<dt>Success rate</dt><dd>75 %</dd>" in content
    assert "<dt>p50</dt><dd>250 ms</dd>" in content
    assert content.count('<svg class="chart-svg" role="img"') >= 3
    assert "timeout after &lt;n&gt; s" in content or "timeout after <n> s" in content


def test_the_timeline_tab_lists_the_batch_events(as_alice, alice):
    batch = make_batch(alice)
    services.batch_pause(batch=batch, by=alice)
    content = as_alice.get(f"/batches/{batch.pk}/?tab=timeline").content.decode()
    assert "<strong>Created</strong>" in content and "<strong>Paused</strong>" in content


def test_history_filters_by_status_type_and_text(as_alice, alice):
    make_batch(alice, name="sales load", type="noop")
    finish(make_batch(alice, name="hr export"))
    assert "sales load" in as_alice.get("/batches/?type=noop").content.decode()
    assert "hr export" not in as_alice.get("/batches/?type=noop").content.decode()
    by_status = as_alice.get("/batches/?status=completed").content.decode()
    assert "hr export" in by_status and "sales load" not in by_status
    by_text = as_alice.get("/batches/?q=sales").content.decode()
    assert "sales load" in by_text and "hr export" not in by_text


def test_history_shows_a_bad_date_as_an_error_not_a_crash(as_alice):
    response = as_alice.get("/batches/?created_after=2026-02-31")
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()


def test_the_create_form_has_labelled_fields_with_defaults(as_alice):
    content = as_alice.get("/batches/new/demo.sleep/").content.decode()
    for label in ("Name", "Items", "Duration (ms)", "Max parallel", "Stop on error", "Priority"):
        assert f">{label}</label>" in content, label
    assert 'name="max_parallel" value="4"' in content


def test_an_unknown_type_is_a_404(as_alice):
    assert as_alice.get("/batches/new/no.such.type/").status_code == 404


def test_creating_from_the_form_starts_the_batch_and_lands_on_its_page(as_alice, alice):
    response = as_alice.post(
        "/batches/new/demo.sleep/",
        {
            "name": "from the form",
            "items": "a\nb\n\nc\n",
            "params-duration_ms": "20",
            "params-failure_rate": "0",
            "params-fail_attempts": "0",
            "max_parallel": "2",
            "max_retries": "1",
            "retry_backoff_s": "1",
            "timeout_s": "30",
            "priority": "high",
        },
    )
    batch = Batch.objects.get(name="from the form")
    assert response.status_code == 302 and response["Location"] == f"/batches/{batch.pk}/"
    assert (batch.owner, batch.total, batch.status, batch.max_parallel, batch.priority) == (
        alice,
        3,
        BatchStatus.QUEUED,
        2,
        "high",
    )
    assert batch.params["duration_ms"] == 20
    assert list(batch.operations.values_list("label", flat=True)) == ["a", "b", "c"]


def valid_form(**changes) -> dict:
    data = {
        "name": "n",
        "items": "a",
        "params-duration_ms": "10",
        "params-failure_rate": "0",
        "params-fail_attempts": "0",
        "max_parallel": "4",
        "max_retries": "0",
        "retry_backoff_s": "1",
        "timeout_s": "300",
        "priority": "default",
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "changes, field_id, message",
    [
        ({"items": ""}, "id_items", "at least one item"),
        ({"max_parallel": "500"}, "id_max_parallel", "less than or equal to 100"),
        ({"params-failure_rate": "2"}, "id_params-failure_rate", "less than or equal to 1"),
        ({"name": ""}, "id_name", "This field is required"),
        ({"items": '[{"label": "a", "params": {"duration_ms": -5}}]'}, "id_items", "Item 1, duration_ms"),
    ],
)
def test_a_bad_form_shows_the_error_at_its_field_keeps_the_input_and_writes_nothing(
    as_alice, changes, field_id, message
):
    response = as_alice.post("/batches/new/demo.sleep/", valid_form(**changes))
    content = response.content.decode()
    assert response.status_code == 422
    assert f'id="{field_id}_error"' in content
    assert message.lower() in content.lower()
    assert 'aria-invalid="true"' in content
    if changes.get("name", "n"):
        assert 'value="n"' in content  # what was typed stays
    assert Batch.objects.count() == 0 and Operation.objects.count() == 0


def test_items_can_come_from_an_uploaded_csv_with_per_item_params(as_alice):
    upload = SimpleUploadedFile("items.csv", b"label,duration_ms\nfast,1\nslow,50\n", content_type="text/csv")
    response = as_alice.post("/batches/new/demo.sleep/", {**valid_form(items=""), "items_file": upload})
    assert response.status_code == 302
    batch = Batch.objects.get()
    assert list(batch.operations.values_list("label", "params")) == [
        ("fast", {"duration_ms": 1}),
        ("slow", {"duration_ms": 50}),
    ]


def test_items_in_the_box_and_a_file_together_are_refused(as_alice):
    upload = SimpleUploadedFile("items.json", b'["x"]', content_type="application/json")
    response = as_alice.post("/batches/new/demo.sleep/", {**valid_form(), "items_file": upload})
    assert response.status_code == 422
    assert "not both" in response.content.decode()
    assert Batch.objects.count() == 0


def test_a_broken_items_file_is_a_form_error(as_alice):
    upload = SimpleUploadedFile("items.json", b"[1, ", content_type="application/json")
    response = as_alice.post("/batches/new/demo.sleep/", {**valid_form(items=""), "items_file": upload})
    assert response.status_code == 422
    assert "Not valid JSON" in response.content.decode()


def test_pause_resume_and_cancel_from_the_page(as_alice, alice):
    batch = make_batch(alice)
    htmx = {"HX-Request": "true"}
    response = as_alice.post(f"/batches/{batch.pk}/pause/", headers=htmx)
    assert response.status_code == 200 and "chip-paused" in response.content.decode()
    assert ">Resume</button>" in response.content.decode() and ">Pause</button>" not in response.content.decode()
    as_alice.post(f"/batches/{batch.pk}/resume/", headers=htmx)
    batch.refresh_from_db()
    assert batch.status == BatchStatus.QUEUED
    as_alice.post(f"/batches/{batch.pk}/cancel/", headers=htmx)
    batch.refresh_from_db()
    assert (batch.status, batch.skipped, batch.cancelled_by) == (BatchStatus.CANCELLED, 3, alice)


def test_an_action_the_status_does_not_allow_is_refused_with_a_message(as_alice, alice):
    batch = finish(make_batch(alice))
    response = as_alice.post(f"/batches/{batch.pk}/resume/", headers={"HX-Request": "true"})
    assert response.status_code == 409
    assert "Cannot resume" in response.content.decode() or "cannot resume" in response.content.decode().lower()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.COMPLETED


def test_only_legal_actions_are_offered(as_alice, alice):
    running = make_batch(alice)
    content = as_alice.get(f"/batches/{running.pk}/").content.decode()
    assert ">Pause</button>" in content and ">Cancel</button>" in content and ">Delete</button>" not in content
    done = finish(make_batch(alice), status=OperationStatus.FAILED)
    content = as_alice.get(f"/batches/{done.pk}/").content.decode()
    assert ">Retry failed</button>" in content and ">Delete</button>" in content and ">Pause</button>" not in content


def test_retry_failed_puts_failed_operations_back(as_alice, alice):
    batch = finish(make_batch(alice), status=OperationStatus.FAILED)
    as_alice.post(f"/batches/{batch.pk}/retry/", headers={"HX-Request": "true"})
    batch.refresh_from_db()
    assert (batch.failed, batch.pending, batch.status) == (0, 3, BatchStatus.QUEUED)


def test_delete_removes_a_finished_batch_and_refuses_an_active_one(as_alice, alice):
    active = make_batch(alice)
    response = as_alice.post(f"/batches/{active.pk}/delete/")
    assert response.status_code == 302 and Batch.objects.filter(pk=active.pk).exists()
    done = finish(make_batch(alice))
    response = as_alice.post(f"/batches/{done.pk}/delete/", headers={"HX-Request": "true"})
    assert response.status_code == 204 and response["HX-Redirect"] == "/"
    assert not Batch.objects.filter(pk=done.pk).exists()


def test_run_again_starts_a_copy_with_the_same_items_and_settings(as_alice, alice):
    original = finish(make_batch(alice, count=4, max_parallel=3, name="again"))
    response = as_alice.post(f"/batches/{original.pk}/run-again/", headers={"HX-Request": "true"})
    copy = Batch.objects.exclude(pk=original.pk).get()
    assert response["HX-Redirect"] == f"/batches/{copy.pk}/"
    assert (copy.name, copy.type, copy.total, copy.max_parallel, copy.status) == ("again", "demo.sleep", 4, 3, "queued")
    assert list(copy.operations.values_list("label", flat=True)) == [f"item-{n}" for n in range(4)]


def test_an_unknown_action_is_a_404(as_alice, alice):
    batch = make_batch(alice)
    assert as_alice.post(f"/batches/{batch.pk}/explode/").status_code == 404


def test_actions_need_post(as_alice, alice):
    batch = make_batch(alice)
    assert as_alice.get(f"/batches/{batch.pk}/cancel/").status_code == 405


def test_the_stats_page_counts_by_status_and_type(as_alice, alice, bob):
    finish(make_batch(alice))
    make_batch(alice, type="noop")
    make_batch(bob)
    content = as_alice.get("/stats/").content.decode()
    assert '<span class="tile-n">2</span>' in content
    assert "<code>noop</code></td><td>1</td>" in content


def test_every_registered_type_has_a_create_page_with_its_parameters(as_alice):
    from jobs.optypes import all_types

    listing = as_alice.get("/batches/new/").content.decode()
    for optype in all_types():
        # Unlisted types (task.call, made by code) still have their page.
        assert (f'href="/batches/new/{optype.key}/"' in listing) == optype.listed, optype.key
        content = as_alice.get(f"/batches/new/{optype.key}/").content.decode()
        for name in optype.form.base_fields:
            assert f'name="params-{name}"' in content, (optype.key, name)


def test_an_http_pipeline_batch_can_be_created_from_the_form(as_alice):
    from jobs.optypes import get_type

    optype = get_type("pipeline.http")
    data = valid_form(items="p1\np2")
    data = {k: v for k, v in data.items() if not k.startswith("params-")}
    for name, field in optype.form.base_fields.items():
        if field.initial is not None:
            # What the rendered form posts back: JSON fields as JSON text.
            data[f"params-{name}"] = (
                json.dumps(field.initial) if isinstance(field.initial, dict | list) else field.initial
            )
    data["params-url"] = "http://127.0.0.1:9/pipelines/{label}/run"
    response = as_alice.post("/batches/new/pipeline.http/", data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    batch = Batch.objects.get()
    assert batch.type == "pipeline.http" and batch.params["url"] == "http://127.0.0.1:9/pipelines/{label}/run"


def test_an_empty_optional_json_parameter_shows_empty_not_null(as_alice):
    content = as_alice.get("/batches/new/pipeline.http/").content.decode()
    assert re.search(r'name="params-headers"[^>]*>\s*</textarea>', content), "headers should start empty"


@override_settings(BATCH_CREATE_RATE_LIMIT=1, BATCH_CREATE_RATE_WINDOW_S=3600)
def test_the_create_form_over_the_rate_limit_says_when_to_try_again_and_keeps_the_input(as_alice, redis_clean):
    assert as_alice.post("/batches/new/demo.sleep/", valid_form(name="first")).status_code == 302
    response = as_alice.post("/batches/new/demo.sleep/", valid_form(name="second"))
    content = response.content.decode()
    assert response.status_code == 429
    assert re.search(r"Too many batches created; try again in \d+ s\.", content)
    assert 'value="second"' in content
    assert list(Batch.objects.values_list("name", flat=True)) == ["first"]


def test_the_batch_page_says_when_max_parallel_exceeds_what_the_live_workers_can_run(as_alice, alice, redis_clean):
    from jobs.engine import dispatch

    batch = services.batch_create(owner=alice, type="noop", name="wide", items=["a"], max_parallel=20)
    dispatch.worker_register("w1:1", {"concurrency": 8})
    content = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert "Max parallel is 20, but the live workers can run at most 8 operations at once" in content
    dispatch.worker_register("w2:2", {"concurrency": 16})
    assert "the live workers can run" not in as_alice.get(f"/batches/{batch.pk}/").content.decode()
