"""A keyboard user on live pages: the events of a running batch change only what changed, so the
focused button keeps focus and an opened traceback stays open."""

import pytest
from playwright.sync_api import expect

from jobs import services

pytestmark = pytest.mark.workers


def test_focus_stays_on_pause_while_the_batch_runs_live(logged_in, server, two_workers, alice):
    page = logged_in
    batch = services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="keep focus",
        items=[f"f{n}" for n in range(16)],
        params={"duration_ms": 300},
        max_parallel=2,
    )
    page.goto(f"{server}/batches/{batch.pk}/")
    live = page.locator("section.live")
    expect(live.locator("h1 .chip")).to_have_text("Running", timeout=15_000)
    pause = live.get_by_role("button", name="Pause")
    pause.focus()
    page.evaluate("document.activeElement.__marked = true")
    completed = live.locator("dt:text-is('Completed') + dd")
    start = int(completed.inner_text())
    expect(completed).not_to_have_text(str(start), timeout=15_000)
    page.wait_for_function(f"Number(document.querySelector('section.live dt + dd.ok-text').textContent) >= {start + 4}")
    focused = page.evaluate("[document.activeElement.textContent, document.activeElement.__marked === true]")
    assert focused == ["Pause", True], "the live events replaced the focused Pause button"
    page.keyboard.press("Enter")
    expect(live.locator("h1 .chip")).to_have_text("Paused")


def test_an_open_traceback_stays_open_while_the_operation_retries(logged_in, server, two_workers, alice):
    page = logged_in
    batch = services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="keep details",
        items=["flaky"],
        params={"duration_ms": 1200, "fail_attempts": 1},
        max_retries=1,
        retry_backoff_s=0,
    )
    page.goto(f"{server}/batches/{batch.pk}/operations/1/")
    live = page.locator("section.live")
    traceback = live.locator("#attempt-1 details.traceback")
    expect(traceback).to_be_visible(timeout=20_000)
    traceback.locator("summary").click()
    expect(traceback).to_have_attribute("open", "")
    expect(live.locator("h1 .chip")).to_have_text("Completed", timeout=30_000)
    expect(live.locator(".attempt")).to_have_count(2)
    expect(traceback).to_have_attribute("open", "")
