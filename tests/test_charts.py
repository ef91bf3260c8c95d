"""Chart geometry (jobs.web.charts, pure functions) and the SVG partials of templates/jobs/_charts.html."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.template.loader import render_to_string

from jobs import selectors
from jobs.models import OperationStatus
from jobs.web import charts
from tests.helpers_analytics import add_operations, at, make_batch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

ANALYTICS = {
    "duration_histogram": {"edges": [0, 10, 20, 30, 40], "counts": [1, 4, 0, 2], "bin_width_ms": 10},
    "duration_p50_ms": 15.0,
    "duration_p95_ms": 35.0,
    "duration_p99_ms": 39.0,
    "quality_histogram": {"edges": [i / 10 for i in range(11)], "counts": [0, 0, 0, 0, 0, 1, 0, 0, 2, 5]},
    "quality_mean": 0.82,
    "errors": [
        {
            "error_type": "Timeout",
            "message": "timeout after <n> s",
            "example": "timeout after 3 s",
            "count": 6,
            "share": 0.75,
        },
        {"error_type": "Boom", "message": "boom", "example": "boom", "count": 2, "share": 0.25},
    ],
    "completions": {
        "bucket": "minute",
        "bucket_seconds": 60,
        "buckets": [{"start": T0 + timedelta(minutes=i), "completed": 3 - i, "failed": i} for i in range(3)],
    },
}
STATS = {"throughput_24h": [{"start": T0 + timedelta(hours=i), "completed": i % 3, "failed": i % 2} for i in range(24)]}


def test_y_scale_uses_round_steps_up_to_the_maximum():
    assert charts.y_scale(7) == (8, [0, 2, 4, 6, 8])
    assert charts.y_scale(100) == (100, [0, 50, 100])
    assert charts.y_scale(0) == (1, [0, 1])


def test_histogram_bars_are_proportional_to_counts_and_sit_on_the_axis():
    chart = charts.duration_histogram(ANALYTICS)
    bars = chart["bars"]
    assert len(bars) == 3  # the empty bin draws nothing
    bottom = chart["bottom"]
    assert all(bar["y"] + bar["height"] == pytest.approx(bottom, abs=0.2) for bar in bars)
    # y axis up to 4: the 4-count bar fills the plot, the 2-count bar half of it.
    assert bars[1]["height"] == pytest.approx(chart["plot_height"])
    assert bars[2]["height"] == pytest.approx(chart["plot_height"] / 2)
    assert bars[0]["x"] < bars[1]["x"] < bars[2]["x"]
    assert bars[1]["title"] == "10–20 ms: 4 operations"


def test_percentile_markers_stand_at_their_values_on_the_duration_axis():
    chart = charts.duration_histogram(ANALYTICS)
    left, width = chart["left"], chart["plot_width"]
    positions = {m["label"].split()[0]: m["x"] for m in chart["markers"]}
    assert positions == {
        "p50": pytest.approx(left + width * 15 / 40, abs=0.1),
        "p95": pytest.approx(left + width * 35 / 40, abs=0.1),
        "p99": pytest.approx(left + width * 39 / 40, abs=0.1),
    }
    assert [m["label"] for m in chart["markers"]] == ["p50 15 ms", "p95 35 ms", "p99 39 ms"]
    # Labels near the right edge are drawn to the left of their line; each on its own line.
    assert [m["anchor"] for m in chart["markers"]] == ["start", "end", "end"]
    assert len({m["text_y"] for m in chart["markers"]}) == 3
    assert "p95 35 ms" in chart["label"]


def test_error_bars_are_as_long_as_their_counts():
    chart = charts.error_groups(ANALYTICS)
    first, second = chart["rows"]
    assert second["width"] == pytest.approx(first["width"] / 3, abs=0.1)
    assert (first["count"], first["share"], first["text"]) == (6, "75%", "Timeout: timeout after <n> s")
    assert first["count_x"] + 80 < chart["width"]  # the count fits beside the longest bar
    assert second["y"] > first["y"]


def test_error_groups_beyond_eight_are_summed_in_a_note():
    many = {"errors": [{**ANALYTICS["errors"][1], "message": f"m{i}", "count": 10 - i} for i in range(10)]}
    chart = charts.error_groups(many)
    assert len(chart["rows"]) == 8
    assert chart["rest"] == "and 3 more in 2 other group(s)"


def test_completions_stack_failed_on_completed():
    chart = charts.completions(ANALYTICS)
    by_title = {bar["title"]: bar for bar in chart["bars"]}
    completed, failed = by_title["12:01: 2 completed"], by_title["12:01: 1 failed"]
    assert failed["y"] + failed["height"] == pytest.approx(completed["y"], abs=0.2)
    assert (completed["colour"], failed["colour"]) == (charts.OK, charts.BAD)
    assert [tick["label"] for tick in chart["x_ticks"]] == ["12:00", "12:01", "12:02"]


def test_throughput_has_24_columns_and_at_most_5_labels():
    chart = charts.throughput_24h(STATS)
    assert len(chart["columns"]) == 24
    assert len(chart["x_ticks"]) == 5
    assert chart["label"].startswith("Operations per hour over the last 24 hours: 36 finished")


@pytest.mark.parametrize("make", [charts.duration_histogram, charts.quality_histogram, charts.completions])
def test_charts_of_empty_analytics_are_empty_not_errors(make):
    chart = make({})
    assert chart["empty"] and chart["bars"] == []


PARTIALS = ["duration_histogram", "error_groups", "quality_histogram", "completions"]


def svg_of(html: str) -> str:
    match = re.search(r"<svg .*?</svg>", html, re.S)
    assert match, html
    return match.group(0)


@pytest.mark.parametrize("partial", PARTIALS)
def test_each_partial_renders_an_accessible_svg(partial):
    html = render_to_string(f"jobs/_charts.html#{partial}", {"analytics": ANALYTICS})
    svg = svg_of(html)
    assert 'role="img"' in svg
    label = re.search(r'aria-label="([^"]+)"', svg).group(1)
    assert len(label) > 20
    assert re.search(r"<svg [^>]*>\s*<title>[^<]+</title>", svg)
    assert f'font-size="{charts.FONT_SIZE}"' in svg
    assert f'id="chart-{partial.replace("_", "-")}"' in html
    assert "<figcaption>" in html


def test_the_duration_partial_draws_bars_and_three_labelled_markers():
    svg = svg_of(render_to_string("jobs/_charts.html#duration_histogram", {"analytics": ANALYTICS}))
    assert svg.count("<rect ") == 3
    assert svg.count('stroke-dasharray="4 3"') == 3
    for label in ("p50 15 ms", "p95 35 ms", "p99 39 ms"):
        assert f">{label}</text>" in svg
    assert charts.ACCENT in svg and charts.BAD in svg and charts.MUTED in svg


def test_the_error_partial_shows_each_group_with_its_count():
    svg = svg_of(render_to_string("jobs/_charts.html#error_groups", {"analytics": ANALYTICS}))
    assert "Timeout: timeout after &lt;n&gt; s" in svg  # escaped, never raw markup
    assert ">6 (75%)</text>" in svg and ">2 (25%)</text>" in svg
    assert f'fill="{charts.BAD}"' in svg


def test_the_completions_partial_uses_the_ok_and_bad_colours():
    svg = svg_of(render_to_string("jobs/_charts.html#completions", {"analytics": ANALYTICS}))
    assert svg.count(f'fill="{charts.OK}"') == 3 + 1  # three bars and the legend
    assert svg.count(f'fill="{charts.BAD}"') == 2 + 1


def test_the_throughput_partial_renders_from_stats():
    svg = svg_of(render_to_string("jobs/_charts.html#throughput_24h", {"stats": STATS}))
    assert 'aria-label="Operations per hour over the last 24 hours: 36 finished' in svg
    assert svg.count("<rect ") == 16 + 12 + 2  # non-empty completed and failed bars, the legend


@pytest.mark.parametrize("partial", PARTIALS)
def test_partials_render_an_empty_batch(alice, partial):
    analytics = selectors.batch_analytics(make_batch(alice))
    svg = svg_of(render_to_string(f"jobs/_charts.html#{partial}", {"analytics": analytics}))
    assert "No " in svg and 'role="img"' in svg


def test_partials_render_a_real_batchs_analytics(alice):
    batch = make_batch(alice)
    add_operations(
        batch,
        [dict(duration_ms=10 * i, quality_score=i / 20, started_at=at(i), finished_at=at(i * 7)) for i in range(1, 21)]
        + [
            dict(
                status=OperationStatus.FAILED,
                duration_ms=5,
                error=f"timeout after {i} s",
                error_type="Timeout",
                finished_at=at(150),
            )
            for i in range(4)
        ],
    )
    analytics = selectors.batch_analytics(batch)
    html = "".join(render_to_string(f"jobs/_charts.html#{p}", {"analytics": analytics}) for p in PARTIALS)
    assert html.count('role="img"') == 4
    assert ">4 (100%)</text>" in html


def test_the_timeline_puts_each_workers_overlapping_attempts_on_rows_of_their_own(alice, client):
    from jobs import services
    from jobs.web import charts

    batch = services.batch_create(owner=alice, type="noop", name="gantt", items=["a", "b", "c", "d"], max_parallel=4)
    first = services.operations_claim(batch_id=str(batch.pk), worker="host:1", limit=2)
    second = services.operations_claim(batch_id=str(batch.pk), worker="host:2", limit=2)
    for claim in [*first, *second]:
        if claim.label == "d":
            services.operation_fail(claim=claim, error="no", error_type="No", duration_ms=7, retryable=False)
        else:
            services.operation_complete(claim=claim, duration_ms=5)
    spans = selectors.attempt_spans(batch)
    assert len(spans["spans"]) == 4 and spans["more"] == 0
    chart = charts.gantt(spans)
    assert [(row["text"], row["slots"]) for row in chart["rows"]] == [("host:1", 2), ("host:2", 2)]
    assert {bar["colour"] for bar in chart["bars"]} == {charts.OK, charts.BAD}
    assert len({bar["y"] for bar in chart["bars"]}) == 4  # four rows: two slots of each worker
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/?tab=timeline").content.decode()
    assert page.count('<a href="operations/') == 4 and "#4 d: failed, 7 ms" in page
