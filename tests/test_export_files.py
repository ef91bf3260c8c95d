"""results.xlsx, results.jsonl and operations.xlsx: typed cells, one object per operation, streamed."""

import io
import json
import os
from datetime import datetime
from decimal import Decimal

import openpyxl
import pytest
from django.test import Client

from jobs.api import exports
from jobs.models import OperationStatus
from tests.helpers_analytics import add_operations, add_rows, at, make_batch


@pytest.fixture
def as_alice(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


def sheet_of(response) -> list[tuple]:
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == exports.XLSX_CONTENT_TYPE
    book = openpyxl.load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    return list(book.worksheets[0].iter_rows(values_only=True))


def test_the_results_xlsx_has_the_csv_columns_with_numbers_as_numbers(as_alice, alice):
    batch = make_batch(alice)
    first, second = add_operations(batch, [dict(label="beta"), dict(label="=1+1")])
    add_rows(batch, first, [{"name": "b", "score": 10, "ok": True}, {"name": "a", "score": 2.5, "tags": [1]}])
    add_rows(batch, second, [{"name": "c", "score": "n/a"}])
    response = as_alice.get(f"/api/batches/{batch.pk}/results.xlsx")
    assert f'filename="batch-{batch.short_id}-results.xlsx"' in response["Content-Disposition"]
    header, *rows = sheet_of(response)
    # jsonb keeps keys in its own order: the columns are those of the CSV, in the order it finds.
    assert list(header) == exports.selectors.result_columns(batch)
    assert sorted(header) == ["name", "ok", "operation", "score", "tags"]
    assert [dict(zip(header, row, strict=True)) for row in rows] == [
        {"operation": "beta", "name": "b", "score": 10, "ok": True, "tags": None},
        {"operation": "beta", "name": "a", "score": 2.5, "ok": None, "tags": "[1]"},
        {"operation": "=1+1", "name": "c", "score": "n/a", "ok": None, "tags": None},
    ]


def test_a_label_that_looks_like_a_formula_stays_text(as_alice, alice):
    batch = make_batch(alice)
    add_operations(batch, [dict(label='=HYPERLINK("http://x")')])
    response = as_alice.get(f"/api/batches/{batch.pk}/operations.xlsx")
    book = openpyxl.load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    cell = book.worksheets[0]["B2"]
    assert (cell.value, cell.data_type) == ('=HYPERLINK("http://x")', "s")


def test_the_results_xlsx_follows_the_sort(as_alice, alice):
    batch = make_batch(alice)
    [operation] = add_operations(batch, [dict(label="a")])
    add_rows(batch, operation, [{"n": 1}, {"n": 3}, {"n": 2}])
    rows = sheet_of(as_alice.get(f"/api/batches/{batch.pk}/results.xlsx", {"sort": "-n"}))
    assert [row[1] for row in rows[1:]] == [3, 2, 1]


def test_the_operations_xlsx_has_typed_cells_and_utc_times(as_alice, alice):
    batch = make_batch(alice)
    add_operations(
        batch,
        [
            dict(label="a", duration_ms=12, quality_score=0.5, started_at=at(0), finished_at=at(1.5)),
            dict(label="b", status=OperationStatus.FAILED, error="bad\x01 thing", error_type="Boom"),
        ],
    )
    rows = sheet_of(as_alice.get(f"/api/batches/{batch.pk}/operations.xlsx"))
    assert rows[0] == tuple(exports.selectors.OPERATION_EXPORT_COLUMNS)
    assert rows[1] == (
        1,
        "a",
        "completed",
        1,
        12,
        0.5,
        None,
        None,
        datetime(2026, 3, 1, 12),
        at(1.5).replace(tzinfo=None),
    )
    # A control character a sheet cannot hold is dropped, not a broken file.
    assert rows[2] == (2, "b", "failed", 1, None, None, "Boom", "bad thing", None, None)


def test_decimals_are_written_as_numbers():
    with exports.xlsx_file(["d"], [[Decimal("1.25")], [Decimal("3")]], "s") as file:
        rows = list(openpyxl.load_workbook(file).worksheets[0].iter_rows(values_only=True))
    assert rows == [("d",), (1.25,), (3,)]


def test_more_rows_than_a_sheet_holds_is_a_422_on_format(as_alice, alice, monkeypatch):
    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", 2)
    batch = make_batch(alice)
    [operation] = add_operations(batch, [dict(label="a")])
    add_rows(batch, operation, [{"n": 1}, {"n": 2}, {"n": 3}])
    response = as_alice.get(f"/api/batches/{batch.pk}/results.xlsx")
    assert response.status_code == 422
    assert "download CSV or JSONL" in response.json()["errors"]["format"][0]


def test_the_results_jsonl_has_one_object_per_operation(as_alice, alice):
    batch = make_batch(alice)
    add_operations(
        batch,
        [
            dict(label="a", result={"rows": 2, "ok": True}),
            dict(label="b", status=OperationStatus.FAILED, error="timeout ü", error_type="TimeoutError"),
        ],
    )
    response = as_alice.get(f"/api/batches/{batch.pk}/results.jsonl")
    assert response["Content-Type"] == "application/x-ndjson"
    assert f'filename="batch-{batch.short_id}-results.jsonl"' in response["Content-Disposition"]
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "seq": 1,
            "label": "a",
            "status": "completed",
            "result": {"rows": 2, "ok": True},
            "error_type": "",
            "error": "",
        },
        {
            "seq": 2,
            "label": "b",
            "status": "failed",
            "result": None,
            "error_type": "TimeoutError",
            "error": "timeout ü",
        },
    ]


def test_the_jsonl_export_runs_its_query_only_when_the_body_is_read(alice, django_assert_num_queries):
    batch = make_batch(alice)
    with django_assert_num_queries(0):
        response = exports.results_jsonl_response(batch)
    with django_assert_num_queries(1):
        assert b"".join(response.streaming_content) == b""


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_million_jsonl_lines_stream_in_constant_memory():
    objects = ({"seq": n, "label": f"item-{n}", "status": "completed", "result": {"n": n}} for n in range(1_000_000))
    lines = 0
    start = resident_bytes()
    growth = 0
    for number, chunk in enumerate(exports.jsonl_chunks(objects)):
        assert len(chunk) < exports.FLUSH_BYTES + 1024
        lines += chunk.count(b"\n")
        if number % 100 == 0:
            growth = max(growth, resident_bytes() - start)
    assert lines == 1_000_000
    # The whole output is about 80 MB; what is held at once is a chunk or two.
    assert growth < 16 * 1024 * 1024, growth


@pytest.mark.parametrize("suffix", ["/results.xlsx", "/results.jsonl", "/operations.xlsx"])
def test_bob_gets_a_404_for_alices_file_exports(client: Client, alice, bob, suffix):
    batch = make_batch(alice)
    client.force_login(bob)
    response = client.get(f"/api/batches/{batch.pk}{suffix}")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "errors": {}}


def test_the_batch_page_links_the_file_exports(as_alice, alice):
    batch = make_batch(alice)
    [operation] = add_operations(batch, [dict(label="a")])
    add_rows(batch, operation, [{"n": 1}])
    operations_tab = as_alice.get(f"/batches/{batch.pk}/?tab=operations").content.decode()
    assert f"/api/batches/{batch.pk}/operations.xlsx" in operations_tab
    assert f"/api/batches/{batch.pk}/results.jsonl" in operations_tab
    results_tab = as_alice.get(f"/batches/{batch.pk}/?tab=results").content.decode()
    assert f"/api/batches/{batch.pk}/results.xlsx" in results_tab
