"""Defects of the pages found by trying them as a new user: each test failed before
its fix. Layout ones (widths, chart text) are in tests/e2e/test_layout.py."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from jobs import services
from jobs.models import Batch
from tests.test_views import finish, make_batch, valid_form


@pytest.fixture
def as_alice(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_the_sql_form_leaves_query_parameters_empty_not_null(as_alice):
    page = as_alice.get("/batches/new/sql.workflow/").content.decode()
    box = re.search(r'<textarea name="params-query_params"[^>]*>(.*?)</textarea>', page, re.S)
    assert box is not None and box.group(1).strip() == ""


def test_backticks_in_type_descriptions_are_code(as_alice):
    for url in ("/batches/new/", "/batches/new/sql.workflow/"):
        page = as_alice.get(url).content.decode()
        assert "<code>_instance</code>" in page
        assert "`_instance`" not in page


def test_an_items_error_names_the_line_of_the_box(as_alice):
    form = {**valid_form(items="ghost-a\n\nghost-b"), "name": "meta"}
    form = {k: v for k, v in form.items() if not k.startswith("params-")}
    page = as_alice.post("/batches/new/metadata.extract/", form).content.decode()
    assert "Line 1: No registered database instance named &#x27;ghost-a&#x27;." in page
    assert "Line 3: No registered database instance named &#x27;ghost-b&#x27;." in page
    assert "items[" not in page


def test_an_items_error_of_an_uploaded_csv_names_its_line_at_the_file_field(as_alice):
    upload = SimpleUploadedFile("items.csv", b"label,duration_ms\nfast,1\nslow,-5\n", content_type="text/csv")
    page = as_alice.post("/batches/new/demo.sleep/", {**valid_form(items=""), "items_file": upload}).content.decode()
    errors = re.search(r'<ul class="errorlist" id="id_items_file_error">(.*?)</ul>', page, re.S)
    assert errors is not None and "items.csv row 3, column &quot;duration_ms&quot;:" in errors.group(1)
    assert Batch.objects.count() == 0


def test_history_and_dashboard_bars_show_failures(as_alice, alice):
    batch = make_batch(alice, count=2)
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_fail(claim=claim, error="boom", error_type="Boom", duration_ms=5, retryable=False)
    for url in ("/", "/batches/"):
        page = as_alice.get(url).content.decode()
        assert '<span class="bar-bad" style="width: 50%">' in page, url


def test_a_cancelled_batch_does_not_say_progress_100(as_alice, alice):
    batch = make_batch(alice, count=4)
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_complete(claim=claim, duration_ms=5)
    services.batch_cancel(batch=batch, by=alice)
    page = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert "100 %" not in page
    assert re.search(r"<dt>Ran before cancel</dt><dd[^>]*>25 %</dd>", page)


def test_stats_show_status_names_not_their_keys(as_alice, alice):
    batch = make_batch(alice, count=2)
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_fail(claim=claim, error="boom", error_type="Boom", duration_ms=5, retryable=False)
    finish(batch)
    page = as_alice.get("/stats/").content.decode()
    assert ">Partial success</span>" in page and ">partial_success<" not in page


def test_the_history_pager_links_have_no_empty_query(as_alice, alice):
    for n in range(26):
        Batch.objects.create(owner=alice, name=f"b{n}", type="noop")
    page = as_alice.get("/batches/").content.decode()
    assert 'href="?page=2"' in page and "?&" not in page
    filtered = as_alice.get("/batches/?q=b").content.decode()
    assert 'href="?q=b&amp;page=2"' in filtered


@pytest.mark.parametrize("multipart", [True, False])
def test_a_form_over_the_request_limit_gets_its_page_back_with_the_limit_not_a_bare_400(alice, settings, multipart):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    form = valid_form(items="\n".join(f"item-{n}" for n in range(2000)))
    if multipart:
        response = browser.post("/batches/new/demo.sleep/", form)
    else:
        from urllib.parse import urlencode

        response = browser.post(
            "/batches/new/demo.sleep/", urlencode(form), content_type="application/x-www-form-urlencoded"
        )
    page = response.content.decode()
    assert response.status_code == 413
    assert "larger than the limit of 4 KiB (4,096 bytes)" in page and "nothing was saved" in page
    assert 'name="items"' in page  # the create form, to send again
    assert 'data-max-body="4096"' in page  # what the browser checks before sending
    assert Batch.objects.count() == 0


def test_the_compare_picker_says_previous_run_only_for_a_batch_of_the_same_name(as_alice, alice):
    other = finish(make_batch(alice, count=1, name="weekly"))
    batch = finish(make_batch(alice, count=1, name="nightly"))
    page = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert "(previous run)" not in page and "(the batch before this one)" in page
    again = finish(make_batch(alice, count=1, name="nightly"))
    page = as_alice.get(f"/batches/{again.pk}/").content.decode()
    assert re.search(rf'<option value="{batch.pk}" selected>[^<]*\(previous run\)</option>', page)
    assert other.name in page


def test_an_expired_batch_says_what_ran_before_expiry(as_alice, alice):
    from datetime import timedelta

    from django.utils import timezone

    batch = make_batch(alice, count=4, deadline_s=60)
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
    services.operation_complete(claim=claim, duration_ms=5)
    Batch.objects.filter(pk=batch.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert services.batch_expire(batch_id=batch.pk)
    page = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert "100 %" not in page
    assert re.search(r"<dt>Ran before expiry</dt><dd[^>]*>25 %</dd>", page)


def test_history_shows_skipped_counts(as_alice, alice):
    batch = make_batch(alice, count=4)
    services.batch_cancel(batch=batch, by=alice)
    assert "0/4 · 4 skipped" in as_alice.get("/batches/").content.decode().replace("4/4", "0/4")


def test_the_eta_warns_when_the_deadline_passes_first(as_alice, alice):
    from datetime import timedelta

    from django.utils import timezone

    batch = make_batch(alice, count=10, deadline_s=3600)
    for _ in range(2):
        claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
        services.operation_complete(claim=claim, duration_ms=5)
    now = timezone.now()
    # Two finished in the last 100 s: eight more take 400 s; 60 s are left.
    Batch.objects.filter(pk=batch.pk).update(
        rate_at=now - timedelta(seconds=100), rate_done=0, deadline_at=now + timedelta(seconds=60)
    )
    batch.refresh_from_db()
    assert batch.eta_seconds and batch.eta_seconds > 300 and batch.misses_deadline
    page = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert f'id="batch-{batch.pk}-misses-deadline"' in page and "after the deadline" in page
    Batch.objects.filter(pk=batch.pk).update(deadline_at=now + timedelta(seconds=3000))
    assert "after the deadline" not in as_alice.get(f"/batches/{batch.pk}/").content.decode()


def test_a_cancelled_operation_says_cancelled_once(as_alice, alice):
    batch = make_batch(alice, count=2)
    services.batch_cancel(batch=batch, by=alice)
    page = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert "Cancelled." in page and "<strong>Cancelled</strong>" not in page
    failed = finish(make_batch(alice, count=1), status="failed")
    failed_page = as_alice.get(f"/batches/{failed.pk}/?tab=operations").content.decode()
    assert failed.failed == 1, failed.status
    assert re.search(r"<strong>Boom</strong> boom 42", failed_page), re.findall(r".{60}Boom.{60}", failed_page)


def test_the_api_docs_link_back_to_the_site(client):
    page = client.get("/api/docs").content.decode()
    assert '<a href="/" id="back-to-site">' in page


def test_the_create_form_shows_its_fields_and_the_items_errors_in_one_round(as_alice):
    upload = SimpleUploadedFile("items.csv", b"label,duration_ms\nfast,1\nslow,-5\n", content_type="text/csv")
    form = {**valid_form(items="", max_parallel="0"), "items_file": upload}
    page = as_alice.post("/batches/new/demo.sleep/", form).content.decode()
    assert re.search(r'id="id_max_parallel_error"', page), "the option's own error"
    errors = re.search(r'<ul class="errorlist" id="id_items_file_error">(.*?)</ul>', page, re.S)
    assert errors is not None and "items.csv row 3, column &quot;duration_ms&quot;:" in errors.group(1), (
        "the items' error in the same answer"
    )
    assert Batch.objects.count() == 0


def test_times_are_shown_in_the_viewers_zone_and_the_zone_is_named(as_alice, alice):
    from jobs.web.middleware import TIMEZONE_COOKIE

    batch = finish(make_batch(alice, count=1))
    as_alice.cookies[TIMEZONE_COOKIE] = "Asia/Kolkata"  # +05:30 all year, no summer time
    page = as_alice.get(f"/batches/{batch.pk}/?tab=timeline").content.decode()
    assert "Times in Asia/Kolkata (IST)" in page
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    shown = timezone.localtime(batch.created_at, ZoneInfo("Asia/Kolkata"))
    assert f'title="{shown:%Y-%m-%d %H:%M:%S} IST"' in page
    as_alice.cookies[TIMEZONE_COOKIE] = "Mars/Olympus_Mons"  # unknown: the server's zone
    page = as_alice.get(f"/batches/{batch.pk}/?tab=timeline").content.decode()
    assert "Times in UTC;" in page and ' UTC"' in page


def test_a_scheduled_run_name_names_its_zone(alice):
    from datetime import UTC, datetime

    from jobs.schedules.services import render_name

    moment = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    assert render_name("{template} {datetime}", template="t", n=1, moment=moment, zone_name="Europe/Berlin") == (
        "t 2026-01-05 07:00 CET"
    )


def test_the_operation_page_steps_to_the_previous_and_next_failed_operation(as_alice, alice):
    batch = make_batch(alice, count=5)
    while isinstance(claim := services.operation_claim_next(batch_id=str(batch.pk), worker="t"), services.Claim):
        if claim.seq in (2, 4):
            services.operation_fail(claim=claim, error="boom", error_type="Boom", duration_ms=5, retryable=False)
        else:
            services.operation_complete(claim=claim, duration_ms=5)
    first = as_alice.get(f"/batches/{batch.pk}/").content.decode()
    assert f'href="/batches/{batch.pk}/operations/2/" id="first-failed"' in first
    middle = as_alice.get(f"/batches/{batch.pk}/operations/3/").content.decode()
    assert f'href="/batches/{batch.pk}/operations/2/" rel="prev"' in middle
    assert f'href="/batches/{batch.pk}/operations/4/" rel="next"' in middle
    last = as_alice.get(f"/batches/{batch.pk}/operations/4/").content.decode()
    assert 'rel="next"' not in last and 'rel="prev"' in last


def test_a_dashboard_card_pauses_resumes_and_cancels_its_batch_in_place(as_alice, alice):
    from jobs.models import BatchStatus

    batch = make_batch(alice, count=3)
    card = as_alice.get("/").content.decode()
    assert f'aria-label="Pause {batch.name}"' in card and f'aria-label="Cancel {batch.name}"' in card
    htmx = {"HTTP_HX_REQUEST": "true"}
    paused = as_alice.post(f"/batches/{batch.pk}/pause/", {"from": "card"}, **htmx).content.decode()
    assert paused.lstrip().startswith(f'<article id="batch-{batch.pk}-card"') and "Resume" in paused
    assert Batch.objects.get(pk=batch.pk).status == BatchStatus.PAUSED
    as_alice.post(f"/batches/{batch.pk}/cancel/", {"from": "card"}, **htmx)
    assert Batch.objects.get(pk=batch.pk).status == BatchStatus.CANCELLED


def test_an_error_group_links_to_its_failed_operations_and_retry_all_takes_only_those(as_alice, alice):
    batch = make_batch(alice, count=4)
    kinds = {1: "Timeout", 2: "Timeout", 3: "Refused"}
    while isinstance(claim := services.operation_claim_next(batch_id=str(batch.pk), worker="t"), services.Claim):
        if claim.seq in kinds:
            error = f"{kinds[claim.seq]} at step {claim.seq}"
            services.operation_fail(
                claim=claim, error=error, error_type=kinds[claim.seq], duration_ms=5, retryable=False
            )
        else:
            services.operation_complete(claim=claim, duration_ms=5)
    analytics = as_alice.get(f"/batches/{batch.pk}/?tab=analytics").content.decode()
    assert 'href="?tab=operations&amp;status=failed&amp;error_type=Timeout"' in analytics
    shown = as_alice.get(f"/batches/{batch.pk}/?tab=operations&status=failed&error_type=Timeout").content.decode()
    rows = re.findall(r'<div class="oprow" role="row" id="op-\d+"><span role="cell">(\d+)</span>', shown)
    assert rows == ["1", "2"] and 'id="error-type-filter"' in shown and "error_type=Timeout" in shown
    as_alice.post(
        f"/batches/{batch.pk}/operations-bulk/", {"action": "retry", "status": "failed", "error_type": "Timeout"}
    )
    statuses = dict(batch.operations.values_list("seq", "status"))
    assert statuses[1] == statuses[2] == "pending" and statuses[3] == "failed"
