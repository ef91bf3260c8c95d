"""A person in Chromium: logs in, creates a batch from the form, watches it run live (no reload,
no polling), cancels one, retries failed operations; the dashboard gets new batches live."""

import re

import pytest
from playwright.sync_api import expect

from jobs import services
from jobs.models import Batch, BatchStatus

pytestmark = pytest.mark.workers

LIVE = "section.live"


def mark_document(page) -> None:
    """A marker that a reload or navigation would wipe."""
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def fill_sleep_form(page, server, *, name, items, duration_ms, max_parallel=2, **params):
    page.goto(f"{server}/batches/new/demo.sleep/")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Items", exact=True).fill("\n".join(items))
    page.get_by_label("Duration (ms)").fill(str(duration_ms))
    for label, value in params.items():
        page.get_by_label(label).fill(str(value))
    page.get_by_label("Max parallel").fill(str(max_parallel))
    page.get_by_role("button", name="Create and start").click()
    page.wait_for_url(re.compile(r"/batches/[0-9a-f-]{36}/$"))


def test_a_batch_created_from_the_form_runs_live_to_completed(logged_in, server, two_workers):
    page = logged_in
    fill_sleep_form(page, server, name="e2e live", items=[f"p{n}" for n in range(12)], duration_ms=250)
    mark_document(page)
    expect(page.locator(".messages")).to_contain_text("created with 12 operations")
    bar = page.locator(f"{LIVE} [role=progressbar]")
    seen = set()
    while len(seen) < 2:
        value = int(bar.get_attribute("aria-valuenow"))
        if 0 < value < 100:
            seen.add(value)
        if value == 100:
            break
        page.wait_for_timeout(50)
    expect(page.locator(f"{LIVE} .chip")).to_have_text("Completed", timeout=30_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    assert len(seen) >= 2, f"the bar should move through intermediate values, saw {seen}"
    assert same_document(page), "the page reloaded instead of being updated over the WebSocket"
    expect(page.locator("#operation-rows .chip-completed")).to_have_count(12)
    batch = Batch.objects.get(name="e2e live")
    assert (batch.status, batch.completed) == (BatchStatus.COMPLETED, 12)
    page.get_by_role("link", name="Analytics").click()
    expect(page.locator(".analytics")).to_contain_text("Success rate")
    expect(page.locator(".analytics svg[role=img]").first).to_be_visible()
    page.get_by_role("link", name="Results").click()
    expect(page.locator("table.results tbody tr")).to_have_count(12)
    assert same_document(page), "tabs load in place"


def test_cancelling_a_running_batch_from_the_page(logged_in, server, two_workers):
    page = logged_in
    fill_sleep_form(page, server, name="e2e cancel", items=[f"c{n}" for n in range(20)], duration_ms=3000)
    expect(page.locator(f"{LIVE} .chip")).to_have_text("Running")
    mark_document(page)
    page.locator(LIVE).get_by_role("button", name="Cancel").click()
    expect(page.locator(f"{LIVE} .chip")).to_have_text("Cancelled")
    expect(page.locator(LIVE).get_by_role("button", name="Run again")).to_be_visible()
    assert same_document(page)
    batch = Batch.objects.get(name="e2e cancel")
    assert batch.status == BatchStatus.CANCELLED and batch.running == 0 and batch.skipped >= 18


def test_retrying_failed_operations_from_the_page(logged_in, server, two_workers):
    page = logged_in
    # Each operation fails its first attempt and succeeds on the next.
    fill_sleep_form(
        page, server, name="e2e retry", items=["r1", "r2", "r3"], duration_ms=50, **{"Fail first attempts": 1}
    )
    expect(page.locator(f"{LIVE} .chip")).to_have_text("Failed", timeout=30_000)
    mark_document(page)
    page.locator(LIVE).get_by_role("button", name="Retry failed").click()
    expect(page.locator(f"{LIVE} .chip")).to_have_text("Completed", timeout=30_000)
    assert same_document(page)
    batch = Batch.objects.get(name="e2e retry")
    assert (batch.completed, batch.failed) == (3, 0)


def test_the_dashboard_shows_a_new_batch_and_its_progress_live(logged_in, server, two_workers, alice):
    page = logged_in
    expect(page.locator("#no-active")).to_be_visible()
    mark_document(page)
    batch = services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="from a script",
        items=["a", "b", "c", "d", "e", "f"],
        params={"duration_ms": 700},
        max_parallel=2,
    )
    card = page.locator(f"#batch-{batch.pk}-card")
    expect(card).to_contain_text("from a script")
    expect(page.locator("#no-active")).to_have_count(0)
    # Once finished it leaves the active list at once (no reload) for the finished one.
    expect(page.locator("#recent-batches")).to_contain_text("from a script", timeout=30_000)
    expect(card).to_have_count(0)
    expect(page.locator("#no-active")).to_be_visible()
    assert same_document(page)
