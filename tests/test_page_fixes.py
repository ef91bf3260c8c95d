"""Defects of the pages found by trying them as a new user (issue 15): each test failed before
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
