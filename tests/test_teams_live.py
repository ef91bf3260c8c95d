"""WebSockets of a team's batches: members see them live (the batch page, the dashboard), others
are refused with 4403 as for another user's batch."""

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from jobs import services
from jobs.live.consumers import FORBIDDEN
from jobs.teams import services as team_services
from jobs.teams.models import Role
from tests.test_consumers import connect, receive_until

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@sync_to_async
def team_of_three():
    ada = User.objects.create_user("ada", password="x")
    vera = User.objects.create_user("vera", password="x")
    pat = User.objects.create_user("pat", password="x")
    data = team_services.team_create(name="Data", by=ada)
    team_services.membership_set(team=data, user=vera, role=Role.VIEWER, by=ada)
    return data, ada, vera, pat


@sync_to_async
def team_batch(owner, team, name: str):
    return services.batch_create(owner=owner, team=team, type="noop", name=name, items=["a", "b"])


async def test_a_viewer_follows_a_teams_batch_and_an_outsider_is_refused(redis_clean):
    data, ada, vera, pat = await team_of_three()
    batch = await team_batch(ada, data, "shared nightly")
    page = await connect(f"/ws/batches/{batch.pk}/", vera)
    assert (await page.receive_from(timeout=5)).startswith(f'<section id="batch-{batch.pk}-live"')
    await page.disconnect()
    outsider = await connect(f"/ws/batches/{batch.pk}/", pat)
    assert await outsider.receive_output(timeout=5) == {"type": "websocket.close", "code": FORBIDDEN}
    await outsider.disconnect()


async def test_a_members_dashboard_hears_the_teams_new_batches(redis_clean):
    data, ada, vera, pat = await team_of_three()
    dashboard = await connect("/ws/dashboard/", vera)
    await dashboard.receive_from(timeout=5)
    await dashboard.receive_from(timeout=5)
    fresh = await team_batch(ada, data, "made by ada")
    message = await receive_until(dashboard, f"batch-{fresh.pk}-card")
    assert "made by ada" in message
    await dashboard.disconnect()
