"""Result rows (paged, sorted by the database) and the streamed CSV exports (jobs.api.exports)."""

import csv
import io

import pytest
from django.db.models import F
from django.test import Client

from jobs import selectors
from jobs.api import exports
from jobs.errors import InvalidInput
from jobs.models import Batch, OperationStatus
from tests.helpers_analytics import add_operations, add_rows, at, make_batch


@pytest.fixture
def rows_batch(alice):
    """Rows of two operations; `score` mixes numbers of several widths, a string and a missing value."""
    batch = make_batch(alice)
    first, second = add_operations(batch, [dict(label="beta"), dict(label="alpha")])
    add_rows(batch, first, [{"name": "b", "score": 10}, {"name": "a", "score": 9}])
    add_rows(batch, second, [{"name": "c", "score": 100}, {"name": "d", "score": "n/a"}, {"name": "e"}])
    add_rows(batch, second, [{"score": 2.5, "late": True, "name": "f"}])
    return batch


def names(response) -> list[str]:
    return [row.get("name") for row in response.json()["items"]]


@pytest.fixture
def as_alice(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


def test_columns_are_the_label_then_every_rows_keys_in_order_of_appearance(rows_batch):
    # (PostgreSQL's jsonb keeps a row's keys by length, then bytes: the same order for these rows.)
    assert selectors.result_columns(rows_batch) == ["operation", "name", "score", "late"]


def test_columns_are_found_once_per_batch_version(rows_batch, django_assert_num_queries):
    columns = selectors.result_columns(rows_batch)
    operation = rows_batch.operations.first()
    add_rows(rows_batch, operation, [{"extra": 1}])
    with django_assert_num_queries(0):
        assert selectors.result_columns(rows_batch) == columns
    # Rows only come with a transition, which bumps the version.
    Batch.objects.filter(pk=rows_batch.pk).update(version=F("version") + 1)
    rows_batch.refresh_from_db()
    assert selectors.result_columns(rows_batch) == [*columns, "extra"]


def test_the_instance_column_comes_right_after_the_label(alice):
    batch = make_batch(alice)
    (operation,) = add_operations(batch, [dict(label="eu-1")])
    add_rows(batch, operation, [{"n": 1}, {"n": 2, "_instance": "eu-1"}])
    assert selectors.result_columns(batch) == ["operation", "_instance", "n"]


def test_results_sort_numbers_numerically_then_strings_with_missing_values_last(as_alice, rows_batch):
    url = f"/api/batches/{rows_batch.pk}/results"
    assert names(as_alice.get(url, {"sort": "score"})) == ["f", "a", "b", "c", "d", "e"]
    assert names(as_alice.get(url, {"sort": "-score"})) == ["d", "c", "b", "a", "f", "e"]


def test_results_sort_by_operation_label_keeping_storage_order_for_ties(as_alice, rows_batch):
    url = f"/api/batches/{rows_batch.pk}/results"
    assert names(as_alice.get(url, {"sort": "operation"})) == ["c", "d", "e", "f", "b", "a"]
    assert names(as_alice.get(url, {"sort": "-name"})) == ["f", "e", "d", "c", "b", "a"]


def test_sorted_results_page_with_limit_and_offset(as_alice, rows_batch):
    page = as_alice.get(f"/api/batches/{rows_batch.pk}/results", {"sort": "name", "limit": 2, "offset": 3}).json()
    assert (page["columns"], [r["name"] for r in page["items"]], page["count"]) == (
        ["operation", "name", "score", "late"],
        ["d", "e"],
        6,
    )
    assert page["items"][0] == {"operation": "alpha", "name": "d", "score": "n/a"}


def test_an_unknown_sort_column_is_a_422_with_the_field_path(as_alice, rows_batch):
    for url in (f"/api/batches/{rows_batch.pk}/results", f"/api/batches/{rows_batch.pk}/results.csv"):
        response = as_alice.get(url, {"sort": "-colour"})
        assert response.status_code == 422, url
        assert "Unknown column 'colour'" in response.json()["errors"]["sort"][0]


def test_the_selector_refuses_an_unknown_column(rows_batch):
    with pytest.raises(InvalidInput) as raised:
        selectors.result_rows(rows_batch, "nope")
    assert list(raised.value.errors) == ["sort"]


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.content
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_results_csv_has_a_header_and_every_row_sortable(as_alice, rows_batch):
    response = as_alice.get(f"/api/batches/{rows_batch.pk}/results.csv", {"sort": "-score"})
    assert f'filename="batch-{rows_batch.short_id}-results.csv"' in response["Content-Disposition"]
    assert read_csv(response) == [
        ["operation", "name", "score", "late"],
        ["alpha", "d", "n/a", ""],
        ["alpha", "c", "100", ""],
        ["beta", "b", "10", ""],
        ["beta", "a", "9", ""],
        ["alpha", "f", "2.5", "true"],
        ["alpha", "e", "", ""],
    ]


def test_the_operations_csv_has_the_operations_table(as_alice, alice):
    batch = make_batch(alice)
    add_operations(
        batch,
        [
            dict(label="a", duration_ms=12, quality_score=0.5, started_at=at(0), finished_at=at(1)),
            dict(
                label="b, quoted",
                status=OperationStatus.FAILED,
                duration_ms=30,
                error='bad "x"\nsecond line',
                error_type="Boom",
                started_at=at(2),
                finished_at=at(3),
            ),
            dict(label="c", status=OperationStatus.PENDING),
        ],
    )
    response = as_alice.get(f"/api/batches/{batch.pk}/operations.csv")
    assert f'filename="batch-{batch.short_id}-operations.csv"' in response["Content-Disposition"]
    assert read_csv(response) == [
        "seq label status attempts duration_ms quality_score error_type error started_at finished_at".split(),
        ["1", "a", "completed", "1", "12", "0.5", "", "", at(0).isoformat(), at(1).isoformat()],
        [
            "2",
            "b, quoted",
            "failed",
            "1",
            "30",
            "",
            "Boom",
            'bad "x"\nsecond line',
            at(2).isoformat(),
            at(3).isoformat(),
        ],
        ["3", "c", "pending", "1", "", "", "", "", "", ""],
    ]


def test_the_csv_exports_of_an_empty_batch_are_just_the_header(as_alice, alice):
    batch = make_batch(alice)
    assert read_csv(as_alice.get(f"/api/batches/{batch.pk}/results.csv")) == [["operation"]]
    assert read_csv(as_alice.get(f"/api/batches/{batch.pk}/operations.csv")) == [
        list(selectors.OPERATION_EXPORT_COLUMNS)
    ]


@pytest.mark.parametrize("suffix", ["/results?sort=name", "/results.csv", "/operations.csv", "/analytics"])
def test_bob_gets_a_404_for_alices_results_and_exports(client: Client, bob, rows_batch, suffix):
    client.force_login(bob)
    response = client.get(f"/api/batches/{rows_batch.pk}{suffix}")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found.", "errors": {}}


def test_the_csv_stream_comes_in_chunks_that_join_to_the_whole_file():
    rows = ([i, f"row {i}", {"nested": [i]}, None] for i in range(1000))
    chunks = list(exports.csv_chunks(["n", "text", "json", "none"], rows, flush_bytes=1024))
    assert len(chunks) > 10
    assert all(len(chunk) < 1024 + 200 for chunk in chunks)
    parsed = list(csv.reader(io.StringIO("".join(chunks))))
    assert parsed[0] == ["n", "text", "json", "none"]
    assert parsed[1] == ["0", "row 0", '{"nested": [0]}', ""]
    assert len(parsed) == 1001


def test_the_export_runs_its_query_only_when_the_body_is_read(alice, django_assert_num_queries):
    batch = make_batch(alice)
    with django_assert_num_queries(1):  # the column discovery
        response = exports.results_csv_response(batch)
    with django_assert_num_queries(1):
        assert b"".join(response.streaming_content) == b"operation\r\n"
