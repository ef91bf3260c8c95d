"""WebSocket consumers: push the page's own partials (htmx out-of-band swaps) when a batch changes.

Events from jobs.live.publisher say which batch changed and its counters; the consumer renders the true
state from the database, so a missed or reordered event cannot leave a page wrong, and on
(re)connect it sends the current state at once. Anonymous users and another user's batch are
refused with close code 4403 after accept: a refused handshake looks like a network error to
htmx, which would retry forever.
"""

import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from jobs import selectors
from jobs.errors import BatchNotFound
from jobs.live import publisher
from jobs.models import Batch, Operation

FORBIDDEN = 4403
ANALYTICS_REFRESH_S = 3.0


def oob(html: str, swap: str = "true") -> str:
    """Mark the fragment's top element as an out-of-band swap (by default: replace it by id)."""
    html = html.strip()
    end = html.index(">")
    return f'{html[:end]} hx-swap-oob="{swap}"{html[end:]}'


def _visible_batch(user, batch_id: str) -> Batch | None:
    """The batch if the socket's user may see it (selectors.batch_get_visible), else None."""
    if user is None or not user.is_authenticated:
        return None
    try:
        return selectors.batch_get_visible(user, batch_id)
    except BatchNotFound:
        return None


class BatchConsumer(AsyncWebsocketConsumer):
    """One batch page: the live block (status, bar, counts, ETA, actions) and the rows of the
    operations page it shows (`?page=N&status=S`, as the page asked for them).

    Every event, whichever worker sent it, re-reads the batch and those rows from the database
    and sends what changed in one message; so a change is on the page by the next event of the
    batch (events are coalesced to ~5 a second), even when its own event was folded into
    another process's."""

    group = ""

    async def connect(self) -> None:
        await self.accept()
        self.batch_id = str(self.scope["url_route"]["kwargs"]["batch_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.tab = query.get("tab", ["operations"])[0]
        self.page = query.get("page", ["1"])[0]
        self.status = query.get("status", [""])[0]
        self.operation_ids: list[int] = []
        self.analytics_at = 0.0
        self.row_versions: dict[int, tuple] = {}
        self.shown_version = -1
        if not await self._may_see():
            await self.close(code=FORBIDDEN)
            return
        self.group = publisher.batch_group(self.batch_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._send_state()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def batch_progress(self, event: dict) -> None:
        if event["version"] <= self.shown_version:
            return  # what it announces was already read from the database and sent
        await self._send_state(analytics=time.monotonic() - self.analytics_at >= ANALYTICS_REFRESH_S)

    async def batch_status(self, event: dict) -> None:
        await self._send_state(analytics=True)

    async def _send_state(self, analytics: bool = True) -> None:
        message = await self._render(analytics=analytics and self.tab == "analytics")
        if message is None:  # deleted meanwhile
            await self.close(code=FORBIDDEN)
            return
        await self.send(text_data=message)

    @database_sync_to_async
    def _may_see(self) -> bool:
        batch = _visible_batch(self.scope.get("user"), self.batch_id)
        if batch is None:
            return False
        if self.tab == "operations":
            page = selectors.operations_page(batch, status=self.status, page=self.page)
            self.operation_ids = [operation.pk for operation in page]
        return True

    @database_sync_to_async
    def _render(self, analytics: bool) -> str | None:
        batch = _visible_batch(self.scope["user"], self.batch_id)
        if batch is None:
            return None
        self.shown_version = batch.version
        parts = [oob(render_to_string("jobs/batch_detail.html#live", {"batch": batch}))]
        for operation in Operation.objects.filter(pk__in=self.operation_ids):
            version = (operation.status, operation.attempts, operation.duration_ms, operation.error)
            if self.row_versions.get(operation.pk) != version:
                self.row_versions[operation.pk] = version
                parts.append(oob(render_to_string("jobs/batch_detail.html#row", {"operation": operation})))
        if analytics:
            # Analytics read every finished operation: refreshed every few seconds, not per event.
            self.analytics_at = time.monotonic()
            context = {"batch": batch, "analytics": selectors.batch_analytics(batch)}
            parts.append(oob(render_to_string("jobs/batch_detail.html#analytics", context)))
        return "".join(parts)


class DashboardConsumer(AsyncWebsocketConsumer):
    """The dashboard of one user: totals, the active batches' cards, the recently finished list.

    Progress changes a card in place (a batch the page does not show yet is put first). A status
    change redraws the totals, the active list (a batch that finished leaves it) and the finished
    list."""

    group = ""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=FORBIDDEN)
            return
        self.shown: set[str] = set()
        # Staff see everyone's batches: their dashboard follows the group of all batches, and only
        # that one (their own batches' events also reach their owner group: each would come twice).
        self.group = publisher.ALL_GROUP if user.is_staff else publisher.owner_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        for message in await self._render_all():
            await self.send(text_data=message)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def batch_progress(self, event: dict) -> None:
        card = await self._render_card(event["batch_id"])
        if card:
            await self.send(text_data=card)

    async def batch_status(self, event: dict) -> None:
        for message in await self._render_all():
            await self.send(text_data=message)

    def _card(self, batch) -> str:
        if batch.is_terminal:
            # A finished batch leaves the active list (the finished list shows it); a late progress
            # event of one never puts it back.
            if str(batch.pk) in self.shown:
                self.shown.discard(str(batch.pk))
                return f'<article id="batch-{batch.pk}-card" hx-swap-oob="delete"></article>'
            return ""
        html = render_to_string("jobs/dashboard.html#card", {"batch": batch})
        if str(batch.pk) in self.shown:
            return oob(html)
        self.shown.add(str(batch.pk))
        # A wrapper: its content goes first into #active-batches, and the placeholder leaves.
        return f'<div hx-swap-oob="afterbegin:#active-batches">{html}</div><p id="no-active" hx-swap-oob="delete"></p>'

    @database_sync_to_async
    def _render_card(self, batch_id: str) -> str:
        batch = _visible_batch(self.scope["user"], batch_id)
        return self._card(batch) if batch is not None else ""

    @database_sync_to_async
    def _render_all(self) -> list[str]:
        """Totals and the whole active list (on connect and on every status change, so a batch that
        finished leaves it and one that started joins it), then the finished list in a message of
        its own (table rows do not mix with divs)."""
        context = selectors.dashboard_context(self.scope["user"])
        tiles = oob(render_to_string("jobs/dashboard.html#tiles", context))
        self.shown = {str(batch.pk) for batch in context["active"]}
        body = oob(render_to_string("jobs/dashboard.html#active", context))
        recent = oob(render_to_string("jobs/dashboard.html#recent", context))
        return [tiles + body, recent]
