"""Analytics of a batch and stats, against figures computed by hand (selectors.batch_analytics,
selectors.batch_stats, jobs.selectors.analytics)."""

import random
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from jobs import selectors, services
from jobs.models import Batch, BatchEvent, Operation, OperationStatus
from jobs.selectors import analytics
from tests.helpers_analytics import T0, add_operations, at, make_batch

COMPLETED, FAILED, SKIPPED, PENDING = (
    OperationStatus.COMPLETED,
    OperationStatus.FAILED,
    OperationStatus.SKIPPED,
    OperationStatus.PENDING,
)


@pytest.fixture
def known_batch(alice):
    """Five finished operations over three minutes, one skipped and one pending."""
    batch = make_batch(alice)
    add_operations(
        batch,
        [
            dict(duration_ms=10, quality_score=0.05, started_at=at(0), finished_at=at(10)),
            dict(duration_ms=20, quality_score=0.95, started_at=at(5), finished_at=at(50)),
            dict(duration_ms=100, quality_score=1.0, started_at=at(60), finished_at=at(70)),
            dict(
                status=FAILED,
                duration_ms=30,
                error="timeout after 31 s on host 10.0.0.5",
                error_type="Timeout",
                started_at=at(100),
                finished_at=at(130),
            ),
            dict(
                status=FAILED,
                duration_ms=40,
                error="timeout after 12 s on host 10.0.0.9",
                error_type="Timeout",
                started_at=at(150),
                finished_at=at(180),
            ),
            dict(status=SKIPPED),
            dict(status=PENDING),
        ],
    )
    return batch


def test_it_counts_operations_and_the_success_rate(known_batch):
    data = selectors.batch_analytics(known_batch)
    assert {k: data[k] for k in ("total", "finished", "completed", "failed", "skipped")} == {
        "total": 7,
        "finished": 6,
        "completed": 3,
        "failed": 2,
        "skipped": 1,
    }
    assert data["success_rate"] == 0.5  # 3 of 6 finished


def test_it_computes_duration_mean_and_percentiles_by_linear_interpolation(known_batch):
    data = selectors.batch_analytics(known_batch)
    # Sorted durations 10 20 30 40 100; rank (n - 1) × p = 4p.
    assert (data["duration_count"], data["duration_mean_ms"]) == (5, 40.0)
    assert (data["duration_min_ms"], data["duration_max_ms"]) == (10, 100)
    assert data["duration_p50_ms"] == 30.0  # rank 2
    assert data["duration_p95_ms"] == pytest.approx(88.0)  # rank 3.8: 40 + 60 × 0.8
    assert data["duration_p99_ms"] == pytest.approx(97.6)  # rank 3.96: 40 + 60 × 0.96


def test_it_computes_throughput_between_first_start_and_last_finish(known_batch):
    data = selectors.batch_analytics(known_batch)
    assert (data["first_started_at"], data["last_finished_at"]) == (at(0), at(180))
    assert data["throughput_per_minute"] == 1.67  # 5 finished in 3 minutes, rounded to 2 places


def test_it_groups_errors_by_type_and_normalised_message(known_batch):
    Operation.objects.filter(batch=known_batch, status=SKIPPED).update(
        status=FAILED, error="Boom in '/var/data/x.csv'", error_type=""
    )
    data = selectors.batch_analytics(known_batch)
    assert data["errors"] == [
        {
            "error_type": "Timeout",
            "filter_type": "Timeout",
            "message": "timeout after <n> s on host <ip>",
            "example": data["errors"][0]["example"],
            "count": 2,
            "share": 0.6667,
        },
        {
            "error_type": "Error",
            "filter_type": "",  # stored without a type: no error-type filter to link to
            "message": "Boom in <str>",
            "example": "Boom in '/var/data/x.csv'",
            "count": 1,
            "share": 0.3333,
        },
    ]
    assert data["errors"][0]["example"].startswith("timeout after ")
    assert data["error_types"] == [
        {"error_type": "Timeout", "count": 2, "share": 0.6667},
        {"error_type": "Error", "count": 1, "share": 0.3333},
    ]


def test_it_bins_quality_scores_in_ten_bins_with_one_in_the_last(known_batch):
    data = selectors.batch_analytics(known_batch)
    assert data["quality_histogram"]["counts"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert data["quality_histogram"]["edges"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert (data["quality_count"], data["quality_mean"]) == (3, pytest.approx(2.0 / 3, abs=1e-4))


def test_it_bins_durations_in_about_twenty_round_bins(alice):
    batch = make_batch(alice)
    add_operations(batch, [dict(duration_ms=d, finished_at=at(1)) for d in (3, 17, 250, 1999)])
    histogram = selectors.batch_analytics(batch)["duration_histogram"]
    assert histogram["bin_width_ms"] == 100
    assert histogram["edges"] == list(range(0, 2001, 100))
    assert histogram["counts"] == [2, 0, 1] + [0] * 16 + [1]


def test_a_single_duration_is_one_bin(alice):
    batch = make_batch(alice)
    add_operations(batch, [dict(duration_ms=42, finished_at=at(1))] * 3)
    data = selectors.batch_analytics(batch)
    assert data["duration_histogram"] == {"edges": [42, 43], "counts": [3], "bin_width_ms": 1}
    assert (data["duration_p50_ms"], data["duration_p99_ms"]) == (42.0, 42.0)


def test_it_counts_completions_per_minute_with_empty_minutes(known_batch):
    Operation.objects.filter(batch=known_batch, seq=5).update(finished_at=at(300))
    completions = selectors.batch_analytics(known_batch)["completions"]
    assert (completions["bucket"], completions["bucket_seconds"]) == ("minute", 60)
    # Finished at 10, 50 and 70 s (completed), 130 and 300 s (failed).
    assert [(b["start"], b["completed"], b["failed"]) for b in completions["buckets"]] == [
        (T0, 2, 0),
        (T0 + timedelta(minutes=1), 1, 0),
        (T0 + timedelta(minutes=2), 0, 1),
        (T0 + timedelta(minutes=3), 0, 0),
        (T0 + timedelta(minutes=4), 0, 0),
        (T0 + timedelta(minutes=5), 0, 1),
    ]


def test_completions_of_a_short_batch_are_per_second(alice):
    batch = make_batch(alice)
    add_operations(batch, [dict(duration_ms=1, finished_at=at(s)) for s in (0.2, 0.7, 2.5)])
    completions = selectors.batch_analytics(batch)["completions"]
    assert completions["bucket"] == "second"
    assert [b["completed"] for b in completions["buckets"]] == [2, 0, 1]


def test_an_empty_batch_gives_zeros_and_empty_lists(alice):
    data = selectors.batch_analytics(make_batch(alice))
    assert (data["total"], data["finished"], data["success_rate"], data["throughput_per_minute"]) == (0, 0, 0.0, 0.0)
    assert (data["duration_mean_ms"], data["duration_p50_ms"], data["duration_p95_ms"], data["duration_p99_ms"]) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert (data["errors"], data["error_types"]) == ([], [])
    assert data["quality_histogram"]["counts"] == [0] * 10
    assert data["duration_histogram"] == {"edges": [], "counts": [], "bin_width_ms": 0}
    assert data["completions"]["buckets"] == []


def test_a_batch_with_only_pending_operations_gives_zeros(alice):
    batch = make_batch(alice)
    add_operations(batch, [dict(status=PENDING)] * 4)
    data = selectors.batch_analytics(batch)
    assert (data["total"], data["finished"], data["duration_p95_ms"], data["completions"]["buckets"]) == (4, 0, 0.0, [])


# --- percentiles: one definition on both databases ---------------------------------------------------


@pytest.mark.parametrize(
    "values, fraction, expected",
    [
        ([1, 2, 3, 4], 0.95, 3.85),  # numpy.percentile([1, 2, 3, 4], 95)
        ([1, 2, 3, 4], 0.5, 2.5),
        ([7], 0.99, 7.0),
        ([], 0.5, 0.0),
        ([10, 20, 30, 40, 100], 0.99, 97.6),
    ],
)
def test_percentile_interpolates_like_numpy(values, fraction, expected):
    assert analytics.percentile(values, fraction) == pytest.approx(expected)


def test_percentiles_are_the_same_in_the_database_and_in_python(alice):
    """On PostgreSQL percentile_cont against the Python path; on SQLite the Python path (the one used
    there) against an independent reference: both databases give these same figures."""
    rng = random.Random(7)
    durations = [rng.randint(1, 5000) for _ in range(1001)] + [rng.randint(1, 3) for _ in range(30)]
    batch = make_batch(alice)
    add_operations(batch, [dict(duration_ms=d, finished_at=at(1)) for d in durations])
    finished = Operation.objects.filter(batch=batch)
    in_python = selectors.duration_percentiles(finished, in_database=False)
    ordered = sorted(durations)
    reference = []
    for fraction in (0.5, 0.95, 0.99):
        rank = (len(ordered) - 1) * fraction
        below = int(rank)
        reference.append(ordered[below] + (ordered[below + 1] - ordered[below]) * (rank - below))
    assert in_python == [round(value, 3) for value in reference]
    assert selectors.duration_percentiles(finished) == in_python
    if connection.vendor == "postgresql":
        assert selectors.duration_percentiles(finished, in_database=True) == in_python


# --- error message normalisation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, expected",
    [
        ("timeout after 31 s on host 10.0.0.5", "timeout after <n> s on host <ip>"),
        ("timeout after 12 s on host 10.0.0.9:5432", "timeout after <n> s on host <ip>"),
        ("job 3f2a9c1e-0b7d-4e55-9a1c-2d3e4f5a6b7c not found", "job <uuid> not found"),
        ("object 0x7f3a2c not found", "object <hex> not found"),
        ("commit deadbeef42 rejected", "commit <hex> rejected"),
        ('table "dim_customer" missing', "table <str> missing"),
        ("cannot open /var/lib/data/file-12.csv", "cannot open <path>"),
        ("GET https://api.example.com/v1/jobs/17?x=1 returned 503", "GET <url> returned <n>"),
        ("rate -1.5e3 too low", "rate <n> too low"),
        ("  spaced   out\n text ", "spaced out text"),
        ("connection refused", "connection refused"),
        # HTTP statuses are the kind of failure: kept.
        (
            "HTTP 500 Internal Server Error from POST http://10.0.0.5/run/17: boom",
            "HTTP 500 Internal Server Error from POST <url> boom",
        ),
        ("HTTP/1.1 404 Not Found after 3 tries", "HTTP/1.1 404 Not Found after <n> tries"),
        ("poll answered status 503 at 12:00", "poll answered status 503 at <n>:<n>"),
    ],
)
def test_error_messages_are_normalised(message, expected):
    assert analytics.normalise_message(message) == expected


def test_words_with_digits_are_not_numbers():
    assert analytics.normalise_message("http2 error in utf8 decoder") == "http2 error in utf8 decoder"


@pytest.mark.parametrize(
    "minimum, maximum, expected",
    [(0, 9, (0, 1, 10)), (3, 1999, (0, 100, 20)), (42, 42, (42, 1, 1)), (1000, 1050, (1000, 5, 11))],
)
def test_duration_bins_have_round_widths(minimum, maximum, expected):
    assert analytics.duration_bins(minimum, maximum) == expected


# --- API -------------------------------------------------------------------------------------------


def test_the_analytics_endpoint_answers_the_selectors_figures(client: Client, alice, known_batch):
    client.force_login(alice)
    response = client.get(f"/api/batches/{known_batch.pk}/analytics")
    assert response.status_code == 200
    data = response.json()
    assert (data["duration_p95_ms"], data["success_rate"], data["errors"][0]["count"]) == (88.0, 0.5, 2)
    assert data["duration_histogram"]["counts"][0] == 1
    assert len(data["completions"]["buckets"]) == 4


def test_bob_gets_a_404_for_alices_analytics(client: Client, bob, known_batch):
    client.force_login(bob)
    response = client.get(f"/api/batches/{known_batch.pk}/analytics")
    assert response.status_code == 404
    assert response.json()["message"] == "Not found."


# --- stats -----------------------------------------------------------------------------------------


def test_operations_per_hour_cover_24_hours_grouped_in_the_database(alice, bob):
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    mine, theirs = make_batch(alice), make_batch(bob)
    add_operations(
        mine,
        [
            dict(finished_at=now - timedelta(minutes=5)),
            dict(finished_at=now - timedelta(minutes=10)),
            dict(status=FAILED, finished_at=now - timedelta(hours=2)),
            dict(finished_at=now - timedelta(hours=23, minutes=20)),  # the first hour of the window
            dict(finished_at=now - timedelta(hours=24, minutes=1)),  # before it
            dict(status=PENDING),
        ],
    )
    add_operations(theirs, [dict(finished_at=now - timedelta(minutes=5))])
    hours = selectors.operations_per_hour(alice, now=now)
    assert len(hours) == 24
    assert hours[-1]["start"] == now.replace(minute=0)
    assert hours[0]["start"] == now.replace(minute=0) - timedelta(hours=23)
    assert [(h["completed"], h["failed"]) for h in hours if h["completed"] or h["failed"]] == [(1, 0), (0, 1), (2, 0)]
    assert (hours[0]["completed"], hours[-3]["failed"], hours[-1]["completed"]) == (1, 1, 2)
    assert sum(h["completed"] for h in selectors.operations_per_hour(None, now=now)) == 4


def test_stats_are_owner_scoped_and_staff_see_all(client: Client, alice, bob, staff):
    add_operations(make_batch(alice), [dict(finished_at=timezone.now())] * 2)
    add_operations(make_batch(bob), [dict(finished_at=timezone.now(), status=FAILED)])
    client.force_login(alice)
    mine = client.get("/api/stats").json()
    assert (mine["total"], mine["operations"]["completed"], mine["operations"]["failed"]) == (1, 2, 0)
    assert (mine["operations_last_24h"], len(mine["throughput_24h"])) == (2, 24)
    client.force_login(staff)
    everyone = client.get("/api/stats").json()
    assert (everyone["total"], everyone["operations_last_24h"], everyone["throughput_24h"][-1]["failed"]) == (2, 3, 1)


# --- active time ----------------------------------------------------------------------------------


def test_the_idle_gap_before_a_retry_counts_in_neither_ran_nor_throughput(alice):
    batch = services.batch_create(owner=alice, type="noop", name="gap", items=["a", "b", "c", "d"])
    for n in range(4):
        claim = services.operation_claim_next(batch_id=str(batch.pk), worker="test")
        if n < 2:
            services.operation_complete(claim=claim, duration_ms=5)
        else:
            services.operation_fail(claim=claim, error="boom", error_type="Boom", duration_ms=5, retryable=False)
    # The first run ended four and a half minutes ago; then a person retried the failures.
    gap = timedelta(seconds=270)
    for event in BatchEvent.objects.filter(batch=batch):
        BatchEvent.objects.filter(pk=event.pk).update(created_at=event.created_at - gap)
    for operation in batch.operations.all():
        batch.operations.filter(pk=operation.pk).update(
            started_at=operation.started_at - gap, finished_at=operation.finished_at - gap
        )
    batch.refresh_from_db()
    Batch.objects.filter(pk=batch.pk).update(started_at=batch.started_at - gap, finished_at=batch.finished_at - gap)
    batch.refresh_from_db()
    services.batch_retry_failed(batch=batch, by=alice)
    for _ in range(2):
        services.operation_complete(
            claim=services.operation_claim_next(batch_id=str(batch.pk), worker="test"), duration_ms=5
        )
    batch.refresh_from_db()
    assert batch.status == "completed" and batch.elapsed.total_seconds() >= 270

    assert selectors.active_seconds(batch) < 30
    # 4 operations in a few seconds of work, not 4 in four and a half minutes.
    assert selectors.batch_analytics(batch)["throughput_per_minute"] > 8
    client = Client()
    client.force_login(alice)
    page = client.get(f"/batches/{batch.pk}/").content.decode()
    assert re.search(r" · ran \d+ s · ", page) and "ran 4 min" not in page
