"""A person in Chromium opens one operation from the batch page and watches it finish live."""

import pytest
from playwright.sync_api import expect

from jobs import services
from tests.e2e.test_browser import mark_document, same_document

pytestmark = pytest.mark.workers


def test_an_operation_opened_from_the_batch_page_finishes_live(logged_in, server, two_workers, alice):
    page = logged_in
    batch = services.batch_create(
        owner=alice,
        type="demo.sleep",
        name="watch one",
        items=["quick", {"label": "watched", "params": {"duration_ms": 2500}}],
        params={"duration_ms": 50},
    )
    page.goto(f"{server}/batches/{batch.pk}/")
    page.locator("#operation-rows").get_by_role("link", name="watched").click()
    page.wait_for_url(f"{server}/batches/{batch.pk}/operations/2/")
    live = page.locator("section.live")
    expect(live.locator("h1 .chip")).to_have_text("Running", timeout=15_000)
    expect(live.locator(".attempt").first).to_contain_text("Attempt 1")
    mark_document(page)
    expect(live.locator("h1 .chip")).to_have_text("Completed", timeout=30_000)
    expect(live.locator(".attempt")).to_have_count(1)
    expect(live.locator(".attempt .chip")).to_have_text("Completed")
    expect(live.locator(".json-tree")).to_contain_text('"slept_ms"')
    assert same_document(page), "the page reloaded instead of being updated over the WebSocket"
    page.set_viewport_size({"width": 390, "height": 844})
    expect(live.locator("h1")).to_contain_text("watched")
    for section in page.locator("main section").all():
        box = section.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, "a section is wider than 390 px"
        assert section.evaluate("e => e.scrollWidth <= e.clientWidth"), "a section overflows at 390 px"
