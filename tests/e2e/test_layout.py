"""What a person sees at 1280 and 390 px wide in Chromium: nothing runs off the screen, the
columns that matter stay on a phone, chart text is readable, wide fields are wide."""

import pytest

from jobs import services

PHONE, DESKTOP = 390, 1280
# Readable: the smallest chart text, in CSS pixels, once the SVG is scaled to its box.
MIN_CHART_TEXT_PX = 11


def finish(batch, fail_labels=()):
    """Record every operation's outcome through the services, failing those labelled in fail_labels."""
    while isinstance(claim := services.operation_claim_next(batch_id=str(batch.pk), worker="e2e"), services.Claim):
        if claim.label in fail_labels:
            error = "HTTP 503 Service Unavailable from POST http://pipelines.example/run"
            services.operation_fail(claim=claim, error=error, error_type="HTTPStatus", duration_ms=40, retryable=False)
        else:
            services.operation_complete(claim=claim, duration_ms=30)
    batch.refresh_from_db()
    return batch


@pytest.fixture
def sign_in(browser, server):
    """sign_in(username, password, width) → a page of a new browser context, signed in."""
    contexts = []

    def make(username: str, password: str, width: int):
        context = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{server}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{server}/")
        return page

    yield make
    for context in contexts:
        context.close()


def overflow_px(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def chart_text_px(page) -> list[float]:
    """The rendered size of every chart's first text: its font size times the SVG's scale."""
    return page.evaluate(
        """() => [...document.querySelectorAll('svg.chart-svg')].map(svg => {
            const text = svg.querySelector('text');
            return parseFloat(getComputedStyle(text).fontSize) * svg.getScreenCTM().a;
        })"""
    )


def assert_charts_readable(page, server, paths, width):
    for path in paths:
        page.goto(f"{server}{path}")
        sizes = chart_text_px(page)
        assert sizes and min(sizes) >= MIN_CHART_TEXT_PX, f"{path} at {width} px: chart text {sizes}"


def test_on_a_phone_pages_fit_keep_their_key_columns_and_readable_charts(sign_in, server, alice):
    batch = finish(services.batch_create(owner=alice, type="noop", name="phone", items=["a", "b", "c"]), {"b"})
    again = finish(services.batch_run_again(batch=batch, by=alice))
    page = sign_in("alice", "alice-password", PHONE)
    for path in ("/", "/batches/", "/stats/", f"/batches/{batch.pk}/", f"/batches/{batch.pk}/compare/{again.pk}/"):
        page.goto(f"{server}{path}")
        assert overflow_px(page) <= 0, f"{path} runs off a {PHONE} px screen"
        header = page.locator("header.topbar")
        assert header.evaluate("h => h.scrollWidth <= h.clientWidth"), f"the navigation of {path} overflows"

    page.goto(f"{server}/batches/{batch.pk}/")
    error = page.locator(f"#op-{batch.operations.get(label='b').pk} [role=cell]").nth(5)
    assert error.is_visible() and "HTTP 503" in error.inner_text()

    page.goto(f"{server}/batches/{batch.pk}/?tab=analytics")
    share = page.locator("table.error-groups th", has_text="Share")
    assert share.is_visible()
    assert page.locator("table.error-groups td").last.inner_text() == "100 %"
    assert_charts_readable(page, server, [f"/batches/{batch.pk}/?tab=analytics", "/stats/"], PHONE)


def test_on_a_desktop_charts_are_readable_the_query_box_wide_and_the_admin_list_whole(sign_in, server, alice, staff):
    batch = finish(services.batch_create(owner=alice, type="noop", name="charts", items=["a", "b"]), {"b"})
    page = sign_in("alice", "alice-password", DESKTOP)
    assert_charts_readable(page, server, [f"/batches/{batch.pk}/?tab=analytics", "/stats/"], DESKTOP)

    page.goto(f"{server}/batches/new/sql.workflow/")
    query = page.get_by_label("SQL query").bounding_box()
    grid = page.locator(".field-grid").first.bounding_box()
    assert query and grid and query["width"] >= 0.9 * grid["width"], "the SQL query box is a narrow cell"
    assert page.get_by_label("Query parameters").input_value() == ""

    for n in range(3):
        services.batch_create(owner=alice, type="demo.sleep", name=f"a batch with a longer name {n}", items=["x"])
    admin = sign_in("sam", "sam-password", DESKTOP)
    admin.goto(f"{server}/admin/jobs/batch/")
    results = admin.locator("#changelist .results")
    assert results.evaluate("r => r.scrollWidth <= r.clientWidth"), "the batch list is cut on the right"
    assert admin.locator("#result_list th", has_text="Created at").is_visible()


def test_on_a_phone_row_actions_stay_and_the_navigation_folds_behind_a_menu(sign_in, server, alice):
    from jobs.notifications import services as notifications
    from jobs.schedules import services as schedules

    notifications.subscription_create(owner=alice, url="http://127.0.0.1:9/hook", events=["finished"])
    template = schedules.template_create(owner=alice, name="nightly", type="noop", items=["a"])
    schedules.schedule_create(template=template, cron="0 6 * * *", timezone="UTC")
    page = sign_in("alice", "alice-password", PHONE)

    page.goto(f"{server}/notifications/")
    assert page.get_by_role("button", name="Pause").is_visible()
    assert page.get_by_role("button", name="Delete").is_visible()
    page.goto(f"{server}/schedules/")
    assert page.get_by_role("button", name="Disable the schedule of nightly").is_visible()

    nav = page.locator("#main-nav")
    menu = page.get_by_role("button", name="Menu")
    assert menu.is_visible() and not nav.is_visible()
    header_height = page.locator("header.topbar").bounding_box()["height"]
    assert header_height < 70, f"the closed header is {header_height} px high"
    menu.click()
    assert nav.is_visible() and menu.get_attribute("aria-expanded") == "true"
    assert page.get_by_role("link", name="History").is_visible()
    page.keyboard.press("Escape")
    assert not nav.is_visible()

    wide = sign_in("alice", "alice-password", DESKTOP)
    assert wide.locator("#main-nav").is_visible() and not wide.get_by_role("button", name="Menu").is_visible()


def test_keyboard_shortcuts_act_and_are_listed_on_question_mark(sign_in, server, alice):
    batch = services.batch_create(owner=alice, type="demo.sleep", name="keys", items=["a", "b"], start=False)
    services.batch_start(batch=batch)
    page = sign_in("alice", "alice-password", DESKTOP)
    page.goto(f"{server}/batches/{batch.pk}/")
    page.keyboard.press("?")
    dialog = page.locator("dialog#shortcuts")
    assert dialog.is_visible() and "Pause or resume the batch" in dialog.inner_text()
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    page.keyboard.press("p")
    page.get_by_role("button", name="Resume").wait_for()
    batch.refresh_from_db()
    assert batch.status == "paused"
    page.keyboard.press("g")
    page.keyboard.press("h")
    page.wait_for_url(f"{server}/batches/")


def test_a_dark_system_scheme_gets_dark_pages(browser, server, alice):
    context = browser.new_context(viewport={"width": DESKTOP, "height": 900}, color_scheme="dark")
    page = context.new_page()
    page.goto(f"{server}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server}/")
    background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    text = page.evaluate("getComputedStyle(document.documentElement).color")
    context.close()

    def brightness(rgb: str) -> float:
        red, green, blue = (float(part) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
        return (red * 299 + green * 587 + blue * 114) / 1000

    assert brightness(background) < 60 and brightness(text) > 180, (background, text)
