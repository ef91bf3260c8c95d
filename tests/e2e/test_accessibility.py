"""axe-core over the pages people use most, at desktop and phone widths, in the light and the
dark scheme: no serious or critical violation of WCAG 2 A/AA."""

from pathlib import Path

import axe_playwright_python
import pytest

from jobs import services
from jobs.notifications import services as notifications
from jobs.schedules import services as schedules
from tests.e2e.test_layout import DESKTOP, PHONE, finish, sign_in  # noqa: F401 - sign_in is a fixture

AXE = Path(axe_playwright_python.__file__).with_name("axe.min.js")
SERIOUS = ("serious", "critical")


def violations(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}}))
            .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                   where: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"""
    )
    return [f"{v['id']} ({v['impact']}): {v['help']} at {v['where']}" for v in found if v["impact"] in SERIOUS]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_main_pages_have_no_serious_accessibility_violation(browser, server, alice, staff, scheme):
    batch = finish(services.batch_create(owner=staff, type="noop", name="a11y", items=["a", "b", "c"]), {"b"})
    again = finish(services.batch_run_again(batch=batch, by=staff))
    notifications.subscription_create(owner=staff, url="http://127.0.0.1:9/hook", events=["finished"])
    template = schedules.template_create(owner=staff, name="nightly", type="noop", items=["a"])
    schedules.schedule_create(template=template, cron="0 6 * * *", timezone="Europe/Berlin")
    paths = [
        "/",
        "/batches/",
        f"/batches/{batch.pk}/",
        f"/batches/{batch.pk}/?tab=analytics",
        f"/batches/{batch.pk}/?tab=timeline",
        f"/batches/{batch.pk}/operations/2/",
        f"/batches/{batch.pk}/compare/{again.pk}/",
        "/workers/",
        "/schedules/",
        "/notifications/",
        "/batches/new/demo.sleep/",
    ]
    problems = []
    for width in (DESKTOP, PHONE):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{server}/accounts/login/")
        page.get_by_label("Username").fill("sam")
        page.get_by_label("Password").fill("sam-password")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{server}/")
        for path in paths:
            page.goto(f"{server}{path}")
            problems += [f"{path} at {width} px, {scheme}: {problem}" for problem in violations(page)]
        context.close()
    assert not problems, "\n".join(problems)
