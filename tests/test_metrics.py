"""/metrics: Prometheus text that a Prometheus parser reads, with what real workers did."""

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from jobs import services
from jobs.engine import dispatch
from jobs.models import Batch
from tests.conftest import wait_for


def scrape(client: Client, **headers) -> dict:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def samples(family, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def test_metrics_count_what_real_workers_ran_by_type_and_outcome(workers, alice):
    workers.start(2)
    ok = services.batch_create(owner=alice, type="noop", name="ok", items=[f"a{n}" for n in range(6)])
    bad = services.batch_create(
        owner=alice, type="demo.sleep", name="bad", items=["x", "y"], params={"duration_ms": 5, "failure_rate": 1}
    )
    wait_for(lambda: all(Batch.objects.get(pk=b.pk).is_terminal for b in (ok, bad)), 60, message="both batches end")
    wait_for(lambda: len(dispatch.live_workers()) == 2, 30, message="both workers in the registry")

    families = scrape(Client())
    attempts = samples(families["batchsite_operation_attempts"], "batchsite_operation_attempts_total")
    assert attempts[(("outcome", "completed"), ("type", "noop"))] == 6
    assert attempts[(("outcome", "failed"), ("type", "demo.sleep"))] == 2
    durations = families["batchsite_operation_duration_seconds"]
    counts = samples(durations, "batchsite_operation_duration_seconds_count")
    assert counts[(("type", "noop"),)] == 6 and counts[(("type", "demo.sleep"),)] == 2
    waits = samples(families["batchsite_operation_queue_wait_seconds"], "batchsite_operation_queue_wait_seconds_count")
    assert waits[(("type", "noop"),)] == 6
    by_status = samples(families["batchsite_batches"], "batchsite_batches")
    assert by_status[(("status", "completed"),)] == 1 and by_status[(("status", "failed"),)] == 1
    assert samples(families["batchsite_workers"], "batchsite_workers")[()] == 2
    assert samples(families["batchsite_redis_up"], "batchsite_redis_up")[()] == 1
    # No series per batch: a batch id is never a label value.
    text = Client().get("/metrics").content.decode()
    assert str(ok.pk) not in text and str(bad.pk) not in text


@pytest.mark.django_db
def test_with_a_token_set_metrics_need_it(settings, redis_clean, staff):
    settings.BATCHSITE_METRICS_TOKEN = "scrape-secret"
    anonymous = Client().get("/metrics")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert "batchsite_batches" in scrape(Client(), HTTP_AUTHORIZATION="Bearer scrape-secret")
    signed_in = Client()
    signed_in.force_login(staff)
    assert "batchsite_batches" in scrape(signed_in)
