"""Items from files (.jsonl, .csv, .xlsx): the one reader behind the create page, Add items, the API's
multipart create and `batch create --items`; errors name the row or line and column; nothing is
written on any error."""

import io
import json
from datetime import date, datetime
from decimal import Decimal

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client, override_settings

from jobs import items as items_module
from jobs import services
from jobs.errors import InvalidInput
from jobs.items import Item, read_items_file
from jobs.models import Batch, BatchEvent, Operation
from jobs.services import tokens

BATCHES = "/api/batches"


def xlsx(rows: list[list]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def errors_of(data: bytes, name: str, **kwargs) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        read_items_file(data, name, **kwargs)
    assert list(caught.value.errors) == [kwargs.get("path", "items")]
    return caught.value.errors[kwargs.get("path", "items")]


def written() -> tuple[int, int, int]:
    return Batch.objects.count(), Operation.objects.count(), BatchEvent.objects.count()


@pytest.fixture
def bearer(alice, redis_clean) -> dict:
    _, key = tokens.token_create(user=alice, name="t")
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def alice_page(alice, redis_clean) -> Client:
    client = Client()
    client.force_login(alice)
    return client


# --- the reader ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_jsonl_file_holds_a_label_or_an_object_a_line_and_blank_lines_are_skipped():
    data = b'"a"\n\n{"label": "b", "params": {"duration_ms": 5}}\n42\n'
    found = read_items_file(data, "items.jsonl")
    assert found.items == [Item("a"), Item("b", {"duration_ms": 5}), Item("42")]
    assert found.places == ["line 1", "line 3", "line 4"]


@pytest.mark.django_db
def test_a_jsonl_line_that_is_not_json_is_named_by_its_line():
    [message] = errors_of(b'"a"\n"b"\n{"label": \n', "items.jsonl")
    assert message.startswith("items.jsonl line 3: Not valid JSON")


@pytest.mark.django_db
def test_a_jsonl_object_with_bad_params_is_named_by_its_line():
    [message] = errors_of(b'"a"\n{"label": "b", "params": 5}\n', "items.jsonl")
    assert message == 'items.jsonl line 2, param "params": Must be an object.'


@pytest.mark.django_db
def test_an_xlsx_file_reads_the_first_sheet_with_typed_cells():
    data = xlsx(
        [
            ["label", "duration_ms", "failure_rate", "day", "note"],
            ["a", 5, 0.5, date(2026, 1, 2), "x"],
            [],
            [17, None, None, None, "  "],
        ]
    )
    found = read_items_file(data, "items.xlsx")
    assert found.items == [
        Item("a", {"duration_ms": 5, "failure_rate": 0.5, "day": "2026-01-02T00:00:00", "note": "x"}),
        Item("17", {}),
    ]
    assert found.places == ["row 2", "row 4"]


@pytest.mark.django_db
def test_an_xlsx_error_cell_is_refused_with_its_row_and_column():
    [message] = errors_of(xlsx([["label", "duration_ms"], ["a", 1], ["b", "#DIV/0!"]]), "items.xlsx")
    assert message == 'items.xlsx row 3, column "duration_ms": The cell holds the error #DIV/0!.'


@pytest.mark.django_db
def test_an_xlsx_value_under_no_header_is_refused_with_its_column_letter():
    [message] = errors_of(xlsx([["label"], ["a", "stray"]]), "items.xlsx")
    assert message == "items.xlsx row 2, column B: A value under no header."


@pytest.mark.django_db
def test_an_xlsx_without_a_label_column_is_refused():
    [message] = errors_of(xlsx([["name"], ["a"]]), "items.xlsx")
    assert message == 'items.xlsx row 1: The first sheet needs a "label" column.'


@pytest.mark.django_db
def test_a_file_named_xlsx_that_is_not_one_is_refused():
    [message] = errors_of(b"label\na\n", "items.xlsx")
    assert message.startswith("items.xlsx: Not a readable .xlsx file")


@pytest.mark.django_db
def test_an_xlsx_without_its_extension_is_recognised_by_its_bytes():
    assert read_items_file(xlsx([["label"], ["a"]]), "upload").items == [Item("a")]


@pytest.mark.django_db
def test_a_csv_row_with_more_cells_than_the_header_names_its_row():
    [message] = errors_of(b"label,duration_ms\na,1\nb,2,3\n", "items.csv")
    assert message == "items.csv row 3: More cells than the header has columns."


@pytest.mark.django_db
def test_a_file_that_is_not_utf8_names_the_line():
    [message] = errors_of("label\na\ncafé\n".encode("latin-1"), "items.csv")
    assert message == "items.csv line 3: Not UTF-8 text."


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["items.jsonl", "items.csv", "items.json"])
def test_more_rows_than_the_limit_are_refused_with_the_limit(name):
    data = {
        "items.jsonl": b'"a"\n"b"\n"c"\n',
        "items.csv": b"label\na\nb\nc\n",
        "items.json": b'["a", "b", "c"]',
    }[name]
    assert errors_of(data, name, max_rows=2) == [f"{name} has more than 2 items; the limit is 2 operations per batch."]


@pytest.mark.django_db
def test_an_xlsx_with_more_rows_than_the_limit_is_refused_with_the_limit():
    data = xlsx([["label"], ["a"], ["b"], ["c"]])
    assert errors_of(data, "items.xlsx", max_rows=2) == [
        "items.xlsx has more than 2 items; the limit is 2 operations per batch."
    ]


@pytest.mark.django_db
def test_a_file_over_the_size_limit_is_refused_with_the_limit(monkeypatch):
    monkeypatch.setattr(items_module, "ITEMS_FILE_MAX_BYTES", 2 * 1024 * 1024)
    [message] = errors_of(b"label\n" + b"a\n" * (1024 * 1024 + 1), "items.csv")
    assert message == "items.csv is larger than 2 MB, the limit."


# --- the create page -------------------------------------------------------------------------------


def page_form(**changes) -> dict:
    data = {
        "name": "from a file",
        "items": "",
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


def test_the_create_page_takes_an_xlsx_file_with_per_item_params(alice_page):
    upload = SimpleUploadedFile("items.xlsx", xlsx([["label", "duration_ms"], ["fast", 1], ["slow", 50]]))
    response = alice_page.post("/batches/new/demo.sleep/", page_form(items_file=upload))
    assert response.status_code == 302, response.content.decode()[:2000]
    batch = Batch.objects.get()
    assert list(batch.operations.order_by("seq").values_list("label", "params")) == [
        ("fast", {"duration_ms": 1}),
        ("slow", {"duration_ms": 50}),
    ]


def test_the_create_page_names_the_xlsx_row_and_column_of_a_bad_param_and_creates_nothing(alice_page):
    upload = SimpleUploadedFile("items.xlsx", xlsx([["label", "duration_ms"], ["fast", 1], ["slow", -5]]))
    response = alice_page.post("/batches/new/demo.sleep/", page_form(items_file=upload))
    assert response.status_code == 422
    errors = " ".join(response.context["items_form"].errors["items_file"])
    assert 'items.xlsx row 3, column "duration_ms": ' in errors
    assert written() == (0, 0, 0)


def test_the_create_page_takes_a_jsonl_file(alice_page):
    upload = SimpleUploadedFile("items.jsonl", b'"a"\n{"label": "b", "params": {"duration_ms": 3}}\n')
    assert alice_page.post("/batches/new/demo.sleep/", page_form(items_file=upload)).status_code == 302
    assert list(Batch.objects.get().operations.order_by("seq").values_list("label", "params")) == [
        ("a", {}),
        ("b", {"duration_ms": 3}),
    ]


def test_add_items_takes_a_file_and_names_its_row_on_an_error(alice, alice_page):
    batch = services.batch_create(owner=alice, type="demo.sleep", name="n", items=["a"], start=False)
    url = f"/batches/{batch.pk}/add-items/"
    bad = SimpleUploadedFile("more.csv", b"label,duration_ms\nb,1\nc,slow\n")
    response = alice_page.post(url, {"items_file": bad})
    page = response.content.decode()
    assert "more.csv row 3, column &quot;duration_ms&quot;: " in page
    assert Operation.objects.count() == 1
    good = SimpleUploadedFile("more.xlsx", xlsx([["label"], ["b"], ["c"]]))
    alice_page.post(url, {"items_file": good})
    assert list(batch.operations.order_by("seq").values_list("label", flat=True)) == ["a", "b", "c"]


# --- the API ---------------------------------------------------------------------------------------


def test_the_api_creates_a_batch_from_a_multipart_csv_file(alice, bearer):
    upload = SimpleUploadedFile("items.csv", b"label,duration_ms\na,1\nb,2\n")
    response = Client().post(
        BATCHES,
        {"type": "demo.sleep", "name": "upload", "items_file": upload, "payload": json.dumps({"max_parallel": 2})},
        **bearer,
    )
    assert response.status_code == 201, response.content
    batch = Batch.objects.get(pk=response.json()["id"])
    assert (batch.name, batch.max_parallel, batch.owner) == ("upload", 2, alice)
    assert list(batch.operations.order_by("seq").values_list("label", "params")) == [
        ("a", {"duration_ms": 1}),
        ("b", {"duration_ms": 2}),
    ]


def test_the_api_names_the_row_and_column_of_a_bad_file_param_and_creates_nothing(bearer):
    upload = SimpleUploadedFile("items.csv", b"label,duration_ms\na,1\nb,1\nc,x\n")
    response = Client().post(BATCHES, {"type": "demo.sleep", "name": "n", "items_file": upload}, **bearer)
    assert response.status_code == 422
    [message] = response.json()["errors"]["items_file"]
    assert message.startswith('items.csv row 4, column "duration_ms": ')
    assert written() == (0, 0, 0)


def test_the_api_refuses_a_broken_xlsx_with_a_422_and_creates_nothing(bearer):
    upload = SimpleUploadedFile("items.xlsx", b"PK\x03\x04 not really")
    response = Client().post(BATCHES, {"type": "noop", "name": "n", "items_file": upload}, **bearer)
    assert response.status_code == 422
    assert response.json()["errors"]["items_file"][0].startswith("items.xlsx: Not a readable .xlsx file")
    assert written() == (0, 0, 0)


@override_settings(BATCH_MAX_OPERATIONS=2)
def test_the_api_refuses_a_file_of_more_items_than_the_limit(bearer):
    upload = SimpleUploadedFile("items.jsonl", b'"a"\n"b"\n"c"\n')
    response = Client().post(BATCHES, {"type": "noop", "name": "n", "items_file": upload}, **bearer)
    assert response.status_code == 422
    assert response.json()["errors"]["items_file"] == [
        "items.jsonl has more than 2 items; the limit is 2 operations per batch."
    ]
    assert written() == (0, 0, 0)


def test_the_api_refuses_a_payload_part_that_is_not_json(bearer):
    upload = SimpleUploadedFile("items.csv", b"label\na\n")
    response = Client().post(BATCHES, {"type": "noop", "name": "n", "items_file": upload, "payload": "{"}, **bearer)
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["payload"]


def test_the_api_still_validates_a_multipart_body_without_type(bearer):
    upload = SimpleUploadedFile("items.csv", b"label\na\n")
    response = Client().post(BATCHES, {"name": "n", "items_file": upload}, **bearer)
    assert response.status_code == 422
    assert "type" in response.json()["errors"]


# --- the command line ------------------------------------------------------------------------------


def test_batch_create_reads_an_xlsx_items_file(alice, tmp_path):
    path = tmp_path / "items.xlsx"
    path.write_bytes(xlsx([["label", "duration_ms", "failure_rate"], ["a", 5, Decimal("0.25")], ["b", 10, None]]))
    out = io.StringIO()
    call_command("batch", "create", "--type", "demo.sleep", "--user", "alice", "--items", str(path), stdout=out)
    batch = Batch.objects.get()
    assert list(batch.operations.order_by("seq").values_list("label", "params")) == [
        ("a", {"duration_ms": 5, "failure_rate": 0.25}),
        ("b", {"duration_ms": 10}),
    ]


def test_batch_create_names_the_jsonl_line_after_item_flags_and_writes_nothing(alice, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"label": "a", "params": {"duration_ms": 1}}\n{"label": "b", "params": {"duration_ms": -1}}\n')
    with pytest.raises(CommandError) as caught:
        call_command("batch", "create", "--type", "demo.sleep", "--user", "alice", "--item", "x", "--items", str(path))
    assert caught.value.returncode == 2
    assert 'items.jsonl line 2, param "duration_ms": ' in str(caught.value)
    assert written() == (0, 0, 0)


def test_xlsx_dates_and_datetimes_become_iso_text():
    assert items_module._xlsx_cell(datetime(2026, 1, 2, 3, 4)) == "2026-01-02T03:04:00"


@pytest.mark.django_db
def test_a_nul_in_a_param_cell_is_refused_with_its_row_and_column():
    [message] = errors_of(b"label,note\na,fine\nb,bad\x00note\n", "items.csv")
    assert message == 'items.csv row 3, column "note": Text cannot contain NUL characters (U+0000).'
