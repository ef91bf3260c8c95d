"""The results tab as a table, a chart (a number by a category, server-rendered bars) and raw JSON."""

import json
import re

import pytest
from django.test import Client

from jobs import selectors, services
from jobs.errors import InvalidInput

ROWS = {
    "shop-a": [{"_instance": "shop-a", "id": 1, "total": 10.5}, {"_instance": "shop-a", "id": 2, "total": 20}],
    "shop-b": [{"_instance": "shop-b", "id": 1, "total": 5}, {"_instance": "shop-b", "id": 2, "total": "n/a"}],
}


@pytest.fixture
def batch(alice):
    """A finished batch whose two operations returned rows (one value is not a number)."""
    made = services.batch_create(owner=alice, type="noop", name="orders", items=list(ROWS))
    while isinstance(claim := services.operation_claim_next(batch_id=str(made.pk), worker="test"), services.Claim):
        services.operation_complete(claim=claim, duration_ms=5, rows=ROWS[claim.label])
    made.refresh_from_db()
    return made


@pytest.fixture
def as_alice(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_the_chart_sums_a_number_per_category_in_the_database(batch):
    assert selectors.numeric_columns(batch) == ["id", "total"]
    chart = selectors.result_chart(batch, x="_instance", y="total", aggregate="sum")
    assert chart["bars"] == [{"category": "shop-a", "value": 30.5}, {"category": "shop-b", "value": 5.0}]
    assert selectors.result_chart(batch, x="_instance", y="", aggregate="count")["bars"][1]["value"] == 2
    assert selectors.result_chart(batch, x="operation", y="id", aggregate="max")["bars"][0] == {
        "category": "shop-a",
        "value": 2.0,
    }
    with pytest.raises(InvalidInput) as caught:
        selectors.result_chart(batch, x="nope", y="_instance", aggregate="median")
    assert set(caught.value.errors) == {"x", "y", "agg"}


def test_the_results_tab_shows_bars_of_the_default_measure_by_instance(as_alice, batch):
    page = as_alice.get(f"/batches/{batch.pk}/?tab=results&view=chart").content.decode()
    assert 'id="chart-result-bars"' in page
    assert re.search(r'<option value="total" selected>', page)  # not the id column
    assert re.search(r'<option value="_instance" selected>', page)
    assert ">30.5</text>" in page and ">shop-b</text>" in page
    bad = as_alice.get(f"/batches/{batch.pk}/?tab=results&view=chart&y=_instance").content.decode()
    assert "is not a numeric column" in bad


def test_the_chart_says_which_rows_it_left_out_and_why(as_alice, batch):
    chart = selectors.result_chart(batch, x="_instance", y="total", aggregate="sum")
    assert chart["left_out"] == [{"kind": "text", "rows": 1, "examples": ["n/a"]}]
    page = as_alice.get(f"/batches/{batch.pk}/?tab=results&view=chart").content.decode()
    footnote = re.search(r'<p class="muted small" id="chart-left-out">(.*?)</p>', page, re.S).group(1)
    assert "left out, because their total is not a number: 1 row with text (“n/a”)" in footnote
    whole = as_alice.get(f"/batches/{batch.pk}/?tab=results&view=chart&y=id").content.decode()
    assert "every row&#x27;s id is a number" in whole or "every row's id is a number" in whole


def test_exact_decimals_from_a_database_are_numbers_and_only_longer_ones_stay_text():
    from decimal import Decimal

    from jobs.optypes.sql.common import json_value

    assert json_value(Decimal("10.50")) == 10.5 and isinstance(json_value(Decimal("10.50")), float)
    assert json_value(Decimal("1000")) == 1000 and isinstance(json_value(Decimal("1000")), int)
    assert json_value(Decimal("0.1")) == 0.1
    # More digits than a JSON number keeps exactly: its exact text, never a rounded number.
    assert json_value(Decimal("12345678901234567890.123456789")) == "12345678901234567890.123456789"
    assert json_value(Decimal("NaN")) == "NaN"


def test_the_raw_view_shows_the_page_of_rows_as_json(as_alice, batch):
    page = as_alice.get(f"/batches/{batch.pk}/?tab=results&view=raw").content.decode()
    raw = re.search(r'<pre class="raw-json"[^>]*>(.*?)</pre>', page, re.S)
    assert raw is not None
    rows = json.loads(raw.group(1).replace("&quot;", '"').replace("&#x27;", "'"))
    assert rows[0] == {"operation": "shop-a", "_instance": "shop-a", "id": 1, "total": 10.5}
    assert len(rows) == 4
    # The table is still the default view.
    assert 'class="table results keep-columns"' in as_alice.get(f"/batches/{batch.pk}/?tab=results").content.decode()
