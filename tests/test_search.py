"""Search across batches: names, operation labels and error text, only over batches the user may
see; results link to the operation page."""

import pytest
from django.test import Client

from jobs import selectors
from jobs.errors import InvalidInput
from jobs.models import OperationStatus
from jobs.services import tokens
from tests.helpers_analytics import add_operations, make_batch


@pytest.fixture
def batches(alice, bob):
    nightly = make_batch(alice, name="Nightly invoices")
    add_operations(
        nightly,
        [
            dict(label="customer-17"),
            dict(
                label="customer-18",
                status=OperationStatus.FAILED,
                error_type="Timeout",
                error="x" * 300 + " read timed out on invoice 42",
            ),
        ],
    )
    bobs = make_batch(bob, name="Bob's nightly invoices")
    add_operations(bobs, [dict(label="customer-17"), dict(label="z", status=OperationStatus.FAILED, error="timed out")])
    return nightly, bobs


def test_it_finds_batches_by_name_and_operations_by_label_and_error_of_the_users_batches_only(alice, batches):
    nightly, _ = batches
    found = selectors.search(alice, "customer-17")
    assert found["batches"] == []
    assert [(o["batch_id"], o["seq"], o["matched"]) for o in found["operations"]] == [(str(nightly.pk), 1, "label")]
    found = selectors.search(alice, "TIMED OUT")
    [operation] = found["operations"]
    assert (operation["label"], operation["matched"], operation["error_type"]) == ("customer-18", "error", "Timeout")
    assert "read timed out on invoice 42" in operation["error"] and len(operation["error"]) <= 162
    assert [b["name"] for b in selectors.search(alice, "nightly")["batches"]] == ["Nightly invoices"]


def test_staff_search_every_batch(staff, batches):
    assert len(selectors.search(staff, "customer-17")["operations"]) == 2


@pytest.mark.parametrize("query", ["", "a", "x" * 201])
def test_a_query_too_short_or_too_long_is_refused(alice, query):
    with pytest.raises(InvalidInput) as caught:
        selectors.search(alice, query)
    assert list(caught.value.errors) == ["q"]


def test_more_results_than_the_limit_say_so(alice, batches):
    found = selectors.search(alice, "customer", limit=1)
    assert len(found["operations"]) == 1 and found["more_operations"] is True


def test_the_api_search_links_to_the_operation_page(alice, batches):
    nightly, bobs = batches
    _, key = tokens.token_create(user=alice, name="t")
    response = Client().get("/api/search", {"q": "customer-1"}, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200
    operations = response.json()["operations"]
    assert [o["url"] for o in operations] == [
        f"/batches/{nightly.pk}/operations/1/",
        f"/batches/{nightly.pk}/operations/2/",
    ]
    assert operations[0]["api_url"] == f"/api/batches/{nightly.pk}/operations/1"
    assert str(bobs.pk) not in response.content.decode()


def test_the_api_refuses_a_one_character_query_with_a_422(alice):
    _, key = tokens.token_create(user=alice, name="t")
    response = Client().get("/api/search", {"q": "a"}, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 422
    assert "q" in response.json()["errors"]


def test_the_search_page_lists_matches_with_links(client: Client, alice, batches):
    nightly, bobs = batches
    client.force_login(alice)
    page = client.get("/search/", {"q": "timed out"}).content.decode()
    assert f'href="/batches/{nightly.pk}/operations/2/"' in page
    assert "Timeout" in page
    assert str(bobs.pk) not in page
    assert 'action="/search/"' in client.get("/").content.decode()  # the box on every page


def test_the_search_page_shows_a_bad_query_as_an_error(client: Client, alice):
    client.force_login(alice)
    response = client.get("/search/", {"q": "a"})
    assert response.status_code == 422
    assert "2 to 200 characters" in response.content.decode()
