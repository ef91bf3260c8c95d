"""The admin: read-only pages that stay fast on big batches; actions and deletes go through services."""

import pytest
from django.contrib import messages
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from jobs import services
from jobs.models import Batch, Operation
from tests.invariants import assert_counters_match_rows

BATCHES = reverse("admin:jobs_batch_changelist")
OPERATIONS = reverse("admin:jobs_operation_changelist")
RESULT_ROWS = reverse("admin:jobs_resultrow_changelist")


@pytest.fixture
def admin_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def make_batch(owner, name: str = "nightly", items=("a", "b"), start: bool = False, **options) -> Batch:
    options.setdefault("type", "demo.sleep")
    return services.batch_create(owner=owner, name=name, items=list(items), start=start, **options)


def fail_operations(batch: Batch, count: int, error_type: str = "Boom") -> None:
    for _ in range(count):
        claim = services.operation_claim_next(batch_id=str(batch.pk), worker="t")
        assert isinstance(claim, services.Claim), claim
        services.operation_fail(claim=claim, error="boom", error_type=error_type, duration_ms=5, retryable=False)


def complete_operation(batch: Batch, rows: list[dict]) -> None:
    claim = services.operation_claim_next(batch_id=str(batch.pk), worker="t")
    assert isinstance(claim, services.Claim), claim
    services.operation_complete(claim=claim, duration_ms=5, rows=rows)


def messages_of(response) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in get_messages(response.wsgi_request)]


def run_action(client: Client, action: str, *batches: Batch, **extra: str):
    data = {"action": action, "_selected_action": [str(batch.pk) for batch in batches], **extra}
    return client.post(BATCHES, data)


def rows_in(response) -> int:
    return response.content.decode().count('class="field-label"')


# --- batches: list and page ---------------------------------------------------------------------


def test_the_batch_list_renders_for_staff_with_status_and_progress(admin_client, alice):
    batch = make_batch(alice, name="nightly load", items=["a", "b", "c"], start=True)
    fail_operations(batch, 1)

    response = admin_client.get(BATCHES)

    assert response.status_code == 200
    content = response.content.decode()
    assert "nightly load" in content
    assert batch.short_id in content
    assert "33 % · 1/3" in content
    assert "chip chip-running" in content and "css/status.css" in content  # the pages' palette
    assert "alice" in content


def test_the_batch_list_is_not_for_people_who_are_not_staff(alice):
    client = Client()
    client.force_login(alice)

    response = client.get(BATCHES)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_batch_list_filters_by_status_type_and_priority(admin_client, alice):
    pending = make_batch(alice, name="still pending")
    cancelled = services.batch_cancel(batch=make_batch(alice, name="called off"), by=alice)
    noop = make_batch(alice, name="does nothing", type="noop", priority="high")

    by_status = admin_client.get(BATCHES, {"status__exact": "cancelled"})
    by_type = admin_client.get(BATCHES, {"type": "noop"})
    by_priority = admin_client.get(BATCHES, {"priority__exact": "high"})

    assert [b.pk for b in by_status.context["cl"].result_list] == [cancelled.pk]
    assert [b.pk for b in by_type.context["cl"].result_list] == [noop.pk]
    assert [b.pk for b in by_priority.context["cl"].result_list] == [noop.pk]
    assert pending.pk not in {b.pk for b in by_status.context["cl"].result_list}


def test_the_batch_list_searches_name_owner_and_short_id(admin_client, alice, bob):
    alices = make_batch(alice, name="warehouse refresh", description="dimension tables")
    bobs = make_batch(bob, name="schema export")

    def found(query: str) -> set:
        return {b.pk for b in admin_client.get(BATCHES, {"q": query}).context["cl"].result_list}

    assert found("refresh") == {alices.pk}
    assert found("dimension") == {alices.pk}
    assert found("bob") == {bobs.pk}
    assert found(bobs.short_id) == {bobs.pk}


def test_the_batch_list_has_a_date_hierarchy(admin_client, alice):
    batch = make_batch(alice)

    response = admin_client.get(
        BATCHES, {"created_at__year": batch.created_at.year, "created_at__month": batch.created_at.month}
    )

    assert response.status_code == 200
    assert [b.pk for b in response.context["cl"].result_list] == [batch.pk]


def test_the_batch_page_links_to_its_operations_instead_of_listing_them(admin_client, alice):
    batch = make_batch(alice, items=["first-item", "second-item", "third-item"], start=True)
    fail_operations(batch, 1)

    response = admin_client.get(reverse("admin:jobs_batch_change", args=[batch.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert "View 3 operations" in content
    assert f"{OPERATIONS}?batch__id__exact={batch.pk}" in content
    assert f"{OPERATIONS}?batch__id__exact={batch.pk}&amp;status__exact=failed" in content
    assert f"{OPERATIONS}?batch__id__exact={batch.pk}&amp;status__exact=pending" in content
    assert "second-item" not in content
    assert "third-item" not in content


def test_the_batch_page_is_read_only_and_shows_the_timeline(admin_client, alice):
    batch = make_batch(alice, name="nightly")
    url = reverse("admin:jobs_batch_change", args=[batch.pk])

    page = admin_client.get(url)
    post = admin_client.post(url, {"name": "renamed", "total": 99})

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert reverse("admin:jobs_batch_delete", args=[batch.pk]) in page.content.decode()
    assert "2 operations" in page.content.decode()  # the "created" event's message
    assert post.status_code == 403
    batch.refresh_from_db()
    assert (batch.name, batch.total) == ("nightly", 2)


def test_batches_cannot_be_added_in_the_admin(admin_client):
    assert admin_client.get(reverse("admin:jobs_batch_add")).status_code == 403


# --- batches: actions ---------------------------------------------------------------------------


def test_cancelling_a_queued_batch_from_the_list_cancels_it(admin_client, alice, staff):
    batch = make_batch(alice, name="to stop", items=["a", "b", "c"], start=True)

    response = run_action(admin_client, "cancel_selected", batch)

    assert response.status_code == 302
    batch.refresh_from_db()
    assert batch.status == "cancelled"
    assert (batch.pending, batch.running, batch.skipped) == (0, 0, 3)
    assert batch.cancelled_by == staff
    assert batch.finished_at is not None
    assert_counters_match_rows(batch)
    assert messages_of(response) == [(messages.SUCCESS, f"{batch}: cancelled.")]


def test_cancelling_a_finished_batch_warns_and_changes_nothing(admin_client, alice):
    batch = services.batch_cancel(batch=make_batch(alice, name="already over"), by=alice)
    batch.refresh_from_db()
    version = batch.version

    response = run_action(admin_client, "cancel_selected", batch)

    assert response.status_code == 302
    [(level, text)] = messages_of(response)
    assert level == messages.WARNING
    assert "already over" in text and "cancelled batch" in text
    batch.refresh_from_db()
    assert batch.version == version


def test_cancelling_reports_each_batch(admin_client, alice):
    queued = make_batch(alice, name="queued one", start=True)
    finished = services.batch_cancel(batch=make_batch(alice, name="finished one"), by=alice)

    response = run_action(admin_client, "cancel_selected", queued, finished)

    levels = {text.split(" (")[0]: level for level, text in messages_of(response)}
    assert levels == {"queued one": messages.SUCCESS, "finished one": messages.WARNING}


def test_retrying_a_batch_without_failures_warns_and_changes_nothing(admin_client, alice):
    batch = make_batch(alice, name="all fine", start=True)
    batch.refresh_from_db()
    version = batch.version

    response = run_action(admin_client, "retry_failed", batch)

    assert response.status_code == 302
    [(level, text)] = messages_of(response)
    assert level == messages.WARNING
    assert "all fine" in text
    batch.refresh_from_db()
    assert (batch.status, batch.version, batch.pending, batch.failed) == ("queued", version, 2, 0)


def test_retrying_a_failed_batch_puts_its_failed_operations_back_to_pending(admin_client, alice, staff):
    batch = make_batch(alice, name="flaky", start=True)
    fail_operations(batch, 2)
    batch.refresh_from_db()
    assert batch.status == "failed"

    response = run_action(admin_client, "retry_failed", batch)

    assert messages_of(response) == [(messages.SUCCESS, f"{batch}: 2 failed operations retried.")]
    batch.refresh_from_db()
    assert (batch.status, batch.pending, batch.failed, batch.finished_at) == ("queued", 2, 0, None)
    assert batch.events.filter(kind="retried", actor=staff).exists()
    assert_counters_match_rows(batch)


# --- batches: deletion --------------------------------------------------------------------------


def test_deleting_an_active_batch_from_its_page_keeps_it(admin_client, alice):
    batch = make_batch(alice, name="busy", start=True)

    response = admin_client.post(reverse("admin:jobs_batch_delete", args=[batch.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:jobs_batch_change", args=[batch.pk])
    [(level, text)] = messages_of(response)
    assert level == messages.WARNING
    assert "cancel it first" in text
    assert Batch.objects.filter(pk=batch.pk).exists()
    assert Operation.objects.filter(batch_id=batch.pk).count() == 2
    assert not LogEntry.objects.exists()


def test_deleting_a_finished_batch_from_its_page_deletes_it_with_its_operations(admin_client, alice):
    batch = services.batch_cancel(batch=make_batch(alice, name="done"), by=alice)

    response = admin_client.post(reverse("admin:jobs_batch_delete", args=[batch.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == BATCHES
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not Operation.objects.filter(batch_id=batch.pk).exists()
    assert LogEntry.objects.filter(object_id=str(batch.pk)).count() == 1


def test_the_delete_confirmation_summarises_instead_of_listing_every_operation(admin_client, alice):
    batch = services.batch_cancel(batch=make_batch(alice, items=[f"item-{i}" for i in range(30)]), by=alice)

    response = admin_client.get(reverse("admin:jobs_batch_delete", args=[batch.pk]))

    assert response.status_code == 200
    content = response.content.decode()
    assert "item-7" not in content
    assert dict(response.context["model_count"])["operations"] == 30
    assert not response.context["perms_lacking"]


def test_deleting_selected_batches_deletes_finished_ones_and_keeps_active_ones(admin_client, alice):
    active = make_batch(alice, name="active", start=True)
    finished = services.batch_cancel(batch=make_batch(alice, name="finished"), by=alice)

    confirmation = run_action(admin_client, "delete_selected", active, finished)
    response = run_action(admin_client, "delete_selected", active, finished, post="yes")

    assert confirmation.status_code == 200
    assert dict(confirmation.context["model_count"]) == {
        "batches": 2,
        "operations": 4,
        "result rows": 0,
        "events": 3,  # created, created, cancelled
    }
    assert response.status_code == 302
    assert set(Batch.objects.values_list("pk", flat=True)) == {active.pk}
    levels = [level for level, _ in messages_of(response)]
    assert sorted(levels) == [messages.SUCCESS, messages.WARNING]
    assert "Deleted 1 batch." in [text for _, text in messages_of(response)]


# --- operations and result rows -----------------------------------------------------------------


def test_the_operation_list_filtered_by_batch_renders_and_pages(admin_client, alice):
    batch = make_batch(alice, name="big", items=[f"op-{i:03d}" for i in range(150)])
    make_batch(alice, name="other", items=["elsewhere"])

    first = admin_client.get(OPERATIONS, {"batch__id__exact": str(batch.pk)})
    second = admin_client.get(OPERATIONS, {"batch__id__exact": str(batch.pk), "p": "2"})

    assert first.status_code == second.status_code == 200
    assert rows_in(first) == 100
    assert rows_in(second) == 50
    assert "op-000" in first.content.decode() and "op-149" in second.content.decode()
    assert "elsewhere" not in first.content.decode() + second.content.decode()
    assert first.context["cl"].result_count == 150
    assert f"Operations of batch {batch}" in first.content.decode()


def test_the_operation_list_filters_by_status_error_type_and_batch_type(admin_client, alice):
    sleepy = make_batch(alice, name="sleepy", items=["s1", "s2", "s3"], start=True)
    fail_operations(sleepy, 1, error_type="Timeout")
    fail_operations(sleepy, 1, error_type="Refused")
    noop = make_batch(alice, name="noop", type="noop", items=["n1"])

    def labels(**filters) -> list[str]:
        return [op.label for op in admin_client.get(OPERATIONS, filters).context["cl"].result_list]

    assert labels(status__exact="failed") == ["s1", "s2"]
    assert labels(error_type="Refused") == ["s2"]
    assert labels(batch__type="noop") == ["n1"]
    assert labels(batch__id__exact=str(sleepy.pk), status__exact="pending") == ["s3"]
    assert noop.total == 1


def test_the_error_type_filter_offers_the_filtered_batchs_error_types(admin_client, alice):
    one = make_batch(alice, name="one", start=True)
    fail_operations(one, 1, error_type="Timeout")
    other = make_batch(alice, name="other", start=True)
    fail_operations(other, 1, error_type="Refused")

    response = admin_client.get(OPERATIONS, {"batch__id__exact": str(one.pk)})

    [error_filter] = [f for f in response.context["cl"].filter_specs if f.title == "error type"]
    assert error_filter.lookup_choices == [("Timeout", "Timeout")]


def test_the_operation_list_searches_label_and_error(admin_client, alice):
    batch = make_batch(alice, items=["dim_customer", "dim_product", "fact_sales"], start=True)
    fail_operations(batch, 1)

    def labels(query: str) -> list[str]:
        return [op.label for op in admin_client.get(OPERATIONS, {"q": query}).context["cl"].result_list]

    assert labels("dim_") == ["dim_customer", "dim_product"]
    assert labels("boom") == ["dim_customer"]


def test_operations_can_be_viewed_but_not_added_changed_or_deleted(admin_client, alice):
    batch = make_batch(alice, items=["only"])
    operation = batch.operations.get()
    change_url = reverse("admin:jobs_operation_change", args=[operation.pk])

    page = admin_client.get(change_url)

    assert page.status_code == 200
    assert "only" in page.content.decode()
    assert admin_client.post(change_url, {"label": "changed"}).status_code == 403
    assert admin_client.get(reverse("admin:jobs_operation_add")).status_code == 403
    assert admin_client.post(reverse("admin:jobs_operation_delete", args=[operation.pk])).status_code == 403
    operation.refresh_from_db()
    assert operation.label == "only"


def test_result_rows_are_listed_by_batch(admin_client, alice):
    batch = make_batch(alice, items=["db1"], start=True)
    complete_operation(batch, rows=[{"_instance": "db1", "n": 41}, {"_instance": "db1", "n": 42}])
    make_batch(alice, name="other")

    response = admin_client.get(RESULT_ROWS, {"batch__id__exact": str(batch.pk)})

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 2
    assert "&quot;n&quot;: 42" in response.content.decode()
