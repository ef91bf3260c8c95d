"""Comparing two runs: real batches on real workers with known differences
give the right buckets, duration figures and result row diff; the API, the CSV exports and the
page agree; access and type checks."""

import csv
import io
import re

import pytest
import sqlalchemy as sa
from django.test import Client

from jobs import selectors, services
from tests.conftest import wait_for
from tests.databases import seed_orders

FAIL = {"failure_rate": 1}


def demo_run(owner, items, duration_ms, name="nightly"):
    """A demo.sleep batch: items are (label, fails?) pairs."""
    return services.batch_create(
        owner=owner,
        type="demo.sleep",
        name=name,
        items=[{"label": label, "params": FAIL if fails else {}} for label, fails in items],
        params={"duration_ms": duration_ms},
        max_parallel=4,
    )


def sql_run(owner, name="orders"):
    return services.batch_create(
        owner=owner,
        type="sql.workflow",
        name=name,
        items=["shop-a", "shop-b"],
        params={"query": "SELECT id, customer, total FROM orders ORDER BY id"},
        max_parallel=2,
    )


def finished(batch):
    wait_for(lambda: batch.refresh_from_db() or batch.is_terminal, 60, message=f"{batch.name} to finish")
    return batch


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_two_real_runs_compare_into_buckets_with_a_row_diff(alice, workers, sqlite_db):
    shop_a, shop_b = sqlite_db("shop-a"), sqlite_db("shop-b")
    seed_orders(shop_a, [(1, "ann", 10, None), (2, "bob", 20, None), (3, "cy", 30, None)])
    seed_orders(shop_b, [(1, "dee", 5, None)])
    services.instance_create(name="shop-a", url=shop_a)
    services.instance_create(name="shop-b", url=shop_b)
    workers.start(1)

    # Run A, then run B with: a newly failing, c fixed, d still failing, x gone, y new, b and a twin passing.
    run_a = demo_run(alice, [("a", False), ("b", False), ("c", True), ("d", True), ("x", False), ("b", False)], 20)
    orders_a = sql_run(alice)
    finished(run_a), finished(orders_a)
    engine = sa.create_engine(shop_a)
    with engine.begin() as connection:  # between the runs: one row changed, one removed, one added
        connection.exec_driver_sql("UPDATE orders SET total = 99 WHERE id = 2")
        connection.exec_driver_sql("DELETE FROM orders WHERE id = 3")
        connection.exec_driver_sql("INSERT INTO orders (id, customer, total) VALUES (4, 'dan', 40)")
    engine.dispose()
    run_b = demo_run(alice, [("a", True), ("b", False), ("c", False), ("d", True), ("y", False), ("b", False)], 120)
    orders_b = sql_run(alice)
    finished(run_b), finished(orders_b)

    comparison = selectors.batch_compare(run_a, run_b)
    assert comparison["summary"] == {
        "newly_failing": 1,
        "still_failing": 1,
        "only_in_a": 1,
        "only_in_b": 1,
        "other": 0,
        "fixed": 1,
        "passing": 2,
    }
    # Regressions first, then in B's order.
    assert [(item["label"], item["bucket"]) for item in comparison["items"]] == [
        ("a", "newly_failing"),
        ("d", "still_failing"),
        ("x", "only_in_a"),
        ("y", "only_in_b"),
        ("c", "fixed"),
        ("b", "passing"),
        ("b", "passing"),
    ]
    newly = comparison["items"][0]
    assert newly["a"]["status"] == "completed" and newly["b"]["status"] == "failed"
    assert newly["b"]["error_type"] == "DemoFailure" and newly["a"]["error"] == ""
    assert newly["duration_change_ms"] >= 80  # about 120 - 20 ms
    assert comparison["duration"]["p50"]["change_ms"] >= 80
    assert comparison["duration"]["p95"]["change_pct"] > 100

    client = Client()
    client.force_login(alice)
    answer = client.get(f"/api/batches/{run_a.pk}/compare/{run_b.pk}?bucket=fixed").json()
    assert answer["count"] == 1 and answer["items"][0]["label"] == "c" and answer["row_diff"] is None
    assert answer["summary"] == comparison["summary"]
    exported = csv_rows(client.get(f"/api/batches/{run_a.pk}/compare/{run_b.pk}.csv"))
    assert [(row["label"], row["change"], row["a_status"], row["b_status"]) for row in exported[:3]] == [
        ("a", "newly_failing", "completed", "failed"),
        ("d", "still_failing", "failed", "failed"),
        ("x", "only_in_a", "completed", ""),
    ]

    # The result rows, keyed by instance and id.
    answer = client.get(f"/api/batches/{orders_a.pk}/compare/{orders_b.pk}?key=_instance,id").json()
    diff = answer["row_diff"]
    assert diff["counts"] == {"added": 1, "removed": 1, "changed": 1, "unchanged": 2}
    assert diff["changed"] == [{"key": {"_instance": "shop-a", "id": 2}, "changes": {"total": {"a": 20, "b": 99}}}]
    assert diff["removed"][0]["key"] == {"_instance": "shop-a", "id": 3}
    assert diff["added"][0]["row"]["customer"] == "dan"
    exported = csv_rows(client.get(f"/api/batches/{orders_a.pk}/compare/{orders_b.pk}/rows.csv?key=_instance,id"))
    assert {"change": "changed", "_instance": "shop-a", "id": "2", "column": "total", "a": "20", "b": "99"} in exported
    assert {row["change"] for row in exported} == {"changed", "removed", "added"}

    page = client.get(f"/batches/{orders_a.pk}/compare/{orders_b.pk}/?key=_instance&key=id")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Only in B" in text and "dan" in text and 'value="_instance" checked' in text


@pytest.fixture
def as_alice(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_another_users_batch_is_a_404_on_both_sides(as_alice, alice, bob):
    mine = demo_run(alice, [("a", False)], 10)
    theirs = demo_run(bob, [("a", False)], 10)
    for a, b in ((mine, theirs), (theirs, mine)):
        assert as_alice.get(f"/api/batches/{a.pk}/compare/{b.pk}").status_code == 404
        assert as_alice.get(f"/api/batches/{a.pk}/compare/{b.pk}.csv").status_code == 404
        assert as_alice.get(f"/batches/{a.pk}/compare/{b.pk}/").status_code == 404


def test_batches_of_different_types_are_a_clear_422_and_page_message(as_alice, alice):
    sleep = demo_run(alice, [("a", False)], 10)
    noop = services.batch_create(owner=alice, type="noop", name="n", items=["a"])
    answer = as_alice.get(f"/api/batches/{sleep.pk}/compare/{noop.pk}")
    assert answer.status_code == 422
    assert "only batches of the same type compare" in answer.json()["errors"]["b"][0]
    page = as_alice.get(f"/batches/{sleep.pk}/compare/{noop.pk}/")
    assert page.status_code == 400 and b"only batches of the same type compare" in page.content


def test_a_key_column_the_batches_lack_is_a_422_on_key(as_alice, alice):
    a, b = demo_run(alice, [("a", False)], 10), demo_run(alice, [("a", False)], 10)
    answer = as_alice.get(f"/api/batches/{a.pk}/compare/{b.pk}?key=id")
    assert answer.status_code == 422 and "Unknown column(s) 'id'" in answer.json()["errors"]["key"][0]


def test_the_batch_page_offers_the_previous_run_and_the_picker_orders_a_before_b(as_alice, alice):
    first = demo_run(alice, [("a", False)], 10)
    demo_run(alice, [("a", False)], 10, name="other name")
    again = demo_run(alice, [("a", False)], 10)
    services.batch_create(owner=alice, type="noop", name="nightly", items=["a"])  # another type: not offered
    page = as_alice.get(f"/batches/{again.pk}/").content.decode()
    assert f'<option value="{first.pk}" selected>' in page
    picker = re.search(r'<select id="compare-with".*?</select>', page, re.S)
    assert picker is not None and picker.group(0).count("<option") == 2
    picked = as_alice.get(f"/batches/{first.pk}/compare/?with={again.short_id}")
    assert picked["Location"] == f"/batches/{first.pk}/compare/{again.pk}/"
    picked = as_alice.get(f"/batches/{again.pk}/compare/?with={first.pk}")
    assert picked["Location"] == f"/batches/{first.pk}/compare/{again.pk}/"


def test_a_template_run_links_to_a_comparison_with_the_run_before(as_alice, alice):
    from jobs.schedules import services as schedules

    template = schedules.template_create(owner=alice, name="nightly", type="noop", items=[{"label": "a"}])
    first = schedules.template_run(template=template)
    second = schedules.template_run(template=template)
    page = as_alice.get(f"/batches/{second.batch_id}/").content.decode()
    assert f'href="/batches/{first.batch_id}/compare/{second.batch_id}/">Compare with run #1</a>' in page
    assert "Compare with run" not in as_alice.get(f"/batches/{first.batch_id}/").content.decode()
