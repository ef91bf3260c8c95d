"""WebSocket consumers: push the page's own partials (htmx out-of-band swaps) when a batch changes.

Events from jobs.live.publisher say which batch changed and its counters; the consumer renders the true
state from the database, so a missed or reordered event cannot leave a page wrong, and on
(re)connect it sends the current state at once. Anonymous users and another user's batch are
refused with close code 4403 after accept: a refused handshake looks like a network error to
htmx, which would retry forever.
"""

import asyncio
import time
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http import Http404
from django.template.loader import render_to_string

from jobs import selectors
from jobs.errors import BatchNotFound
from jobs.live import audiences, publisher, snapshots
from jobs.live.snapshots import oob
from jobs.live.threads import db_read
from jobs.models import Batch, Operation
from jobs.teams import access
from jobs.web.views import batch_panel_context, feature_tab_template, operation_page_context, workers_context

FORBIDDEN = 4403
ANALYTICS_REFRESH_S = 3.0
# A feature's tab (the delivery log) changes without batch events: re-read while it is shown.
FEATURE_TAB_REFRESH_S = 2.0


def _visible_batch(user, batch_id: str) -> Batch | None:
    """The batch if the socket's user may see it (selectors.batch_get_visible), else None."""
    if user is None or not user.is_authenticated:
        return None
    try:
        return selectors.batch_get_visible(user, batch_id)
    except BatchNotFound:
        return None


class EventConsumer(AsyncWebsocketConsumer):
    """A consumer whose channel-layer events skip Channels' per-message hop to the ORM's thread.

    Channels closes stale database connections before every handler, through the one thread the
    ORM runs on in an async server: one hop per event per open page, which queued behind each other
    when many pages were open (bench/live_load.py). The event handlers here reach the database only
    through db_read (jobs.live.threads), which closes stale connections itself."""

    EVENTS = ("batch.progress", "batch.status")

    async def dispatch(self, message: dict) -> None:
        if message["type"] in self.EVENTS:
            await getattr(self, get_handler_name(message))(message)
            return
        await super().dispatch(message)


class BatchConsumer(AsyncWebsocketConsumer):
    """One batch page: the live block (status, bar, counts, ETA, actions) and the rows of the
    operations page it shows (`?page=N&status=S`, as the page asked for them).

    Every event, whichever worker sent it, brings the batch and those rows as read from the
    database after it (one read shared by the batch's pages in this process: jobs.live.snapshots,
    the event handed over by one listener per process: jobs.live.audiences) and sends what changed
    in one message; so a change is on the page by the next event of the batch (events are coalesced
    to ~5 a second), even when its own event was folded into another process's."""

    async def connect(self) -> None:
        await self.accept()
        self.batch_id = str(self.scope["url_route"]["kwargs"]["batch_id"])
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.tab = query.get("tab", ["operations"])[0]
        self.page = query.get("page", ["1"])[0]
        self.status = query.get("status", [""])[0]
        self.error_type = query.get("error_type", [""])[0][:100]
        self.operation_ids: list[int] = []
        self.analytics_at = 0.0
        self.row_versions: dict[int, tuple] = {}
        self.shown_version = -1
        self.shown_total = -1
        if not await self._may_see():
            await self.close(code=FORBIDDEN)
            return
        # Not each page in the batch's group: one listener per process hands events to its pages.
        self.joined = True
        await audiences.join(self.batch_id, self, self.channel_layer)
        # The other batches of its chain: their status changes redraw the chain card.
        self.chain_shown = ""
        self.chain_ids = await self._chain_ids()
        for other_id in self.chain_ids:
            await audiences.join(other_id, self, self.channel_layer)
        await self._send_state()
        await self._send_chain()
        self.feature_shown = ""
        self.refresher: asyncio.Future | None = None
        if feature_tab_template(self.tab):
            self.refresher = asyncio.ensure_future(self._refresh_feature_tab())

    async def disconnect(self, code: int) -> None:
        refresher = getattr(self, "refresher", None)
        if refresher is not None:
            refresher.cancel()
        if getattr(self, "joined", False):
            await audiences.leave(self.batch_id, self)
            for other_id in self.chain_ids:
                await audiences.leave(other_id, self)

    async def on_event(self, event: dict) -> None:
        if event.get("batch_id", self.batch_id) != self.batch_id:
            if event["type"] == "batch.status":
                await self._send_chain()
        elif event["type"] == "batch.status":
            await self.batch_status(event)
            await self._send_chain()
        elif event["type"] == "operation.progress":
            await self._send_current()
        else:
            await self.batch_progress(event)

    async def _send_current(self) -> None:
        """Running operations reported progress: the "Current" column, when it shows otherwise."""
        html = await self._render_current()
        if html and html != getattr(self, "current_shown", ""):
            self.current_shown = html
            await self.send(text_data=html)

    @db_read
    def _render_current(self) -> str:
        batch = Batch.objects.filter(pk=self.batch_id).first()
        if batch is None:
            return ""
        return oob(render_to_string("jobs/batch_detail.html#current", {"batch": batch}))

    async def _send_chain(self) -> None:
        if not self.chain_ids:
            # Most batches are in no chain: no read at all. A status event reaches every page of
            # the batch at once, and a read each would queue a thousand reads behind it.
            return
        html = await self._render_chain()
        if html and html != self.chain_shown:
            self.chain_shown = html
            await self.send(text_data=html)

    @db_read
    def _chain_ids(self) -> list[str]:
        batch = _visible_batch(self.scope.get("user"), self.batch_id)
        if batch is None:
            return []
        return [str(step.pk) for step in selectors.batch_chain(self.scope["user"], batch) if step.pk != batch.pk]

    @db_read
    def _render_chain(self) -> str:
        batch = _visible_batch(self.scope.get("user"), self.batch_id)
        if batch is None:
            return ""
        chain = selectors.batch_chain(self.scope["user"], batch)
        return oob(render_to_string("jobs/_batch_chain.html", {"batch": batch, "chain": chain})) if chain else ""

    async def _refresh_feature_tab(self) -> None:
        while True:
            html = await self._render_feature_tab()
            if html is None:
                return
            if html != self.feature_shown:
                self.feature_shown = html
                await self.send(text_data=html)
            await asyncio.sleep(FEATURE_TAB_REFRESH_S)

    @db_read
    def _render_feature_tab(self) -> str | None:
        batch = _visible_batch(self.scope.get("user"), self.batch_id)
        if batch is None:
            return None
        context = batch_panel_context(batch, tab=self.tab, query={})
        return oob(render_to_string(feature_tab_template(self.tab), context))

    async def batch_progress(self, event: dict) -> None:
        if event["version"] <= self.shown_version:
            return  # what it announces was already read from the database and sent
        await self._send_state(
            min_version=event["version"], analytics=time.monotonic() - self.analytics_at >= ANALYTICS_REFRESH_S
        )

    async def batch_status(self, event: dict) -> None:
        await self._send_state(min_version=event["version"], analytics=True)

    async def _send_state(self, min_version: int = -1, analytics: bool = True) -> None:
        # Shared with the other subscribers of this batch in this process (jobs.live.snapshots);
        # on connect, a read at most one coalescing interval old will do: later events follow.
        max_age_s = settings.BATCHSITE_PROGRESS_INTERVAL_S if min_version < 0 else None
        snapshot = await snapshots.batch_snapshot(
            self.batch_id, self.operation_ids, min_version=min_version, max_age_s=max_age_s
        )
        if snapshot is None:  # deleted meanwhile
            await self.close(code=FORBIDDEN)
            return
        if snapshot.version < self.shown_version:
            return  # an older read than what this page shows (events raced): the next one follows
        self.shown_version = snapshot.version
        parts = [snapshot.live]
        if self.tab == "operations" and snapshot.batch.total != self.shown_total:
            parts += await self._grown_rows(snapshot.batch)  # operations were added
        for operation_id, (shown, html) in snapshot.rows.items():
            if self.row_versions.get(operation_id) != shown:
                self.row_versions[operation_id] = shown
                parts.append(html)
        if analytics and self.tab == "analytics":
            # Analytics read every finished operation: refreshed every few seconds, not per event.
            self.analytics_at = time.monotonic()
            parts.append(await self._render_analytics(snapshot.batch))
        await self.send(text_data="".join(parts))

    @db_read
    def _grown_rows(self, batch: Batch) -> list[str]:
        """Operations were added: when the shown page now holds other rows, all of them (the page
        read again only when the total changed, not per event)."""
        first = self.shown_total < 0
        self.shown_total = batch.total
        if first:
            return []
        page = list(selectors.operations_page(batch, status=self.status, page=self.page, error_type=self.error_type))
        if [operation.pk for operation in page] == self.operation_ids:
            return []
        self.operation_ids = [operation.pk for operation in page]
        rows = []
        for operation in page:
            self.row_versions[operation.pk] = (
                operation.status,
                operation.attempts,
                operation.duration_ms,
                operation.error,
            )
            rows.append(render_to_string("jobs/batch_detail.html#row", {"operation": operation}))
        return [oob(f'<div role="rowgroup" id="operation-rows">{"".join(rows)}</div>')]

    @db_read
    def _may_see(self) -> bool:
        batch = _visible_batch(self.scope.get("user"), self.batch_id)
        if batch is None:
            return False
        if self.tab == "operations":
            page = selectors.operations_page(batch, status=self.status, page=self.page, error_type=self.error_type)
            self.operation_ids = [operation.pk for operation in page]
        return True

    @db_read
    def _render_analytics(self, batch: Batch) -> str:
        context = {"batch": batch, "analytics": selectors.batch_analytics(batch)}
        return oob(render_to_string("jobs/batch_detail.html#analytics", context))


class OperationConsumer(AsyncWebsocketConsumer):
    """One operation's page: its live block (status, attempts, result, files) and, when it
    changed, its first page of result rows. It follows the batch's events (there are no events
    per operation) and sends only when the operation itself changed."""

    group = ""

    async def connect(self) -> None:
        await self.accept()
        kwargs = self.scope["url_route"]["kwargs"]
        self.batch_id, self.seq = str(kwargs["batch_id"]), kwargs["seq"]
        self.shown: tuple | None = None
        if not await self._may_see():
            await self.close(code=FORBIDDEN)
            return
        self.group = publisher.batch_group(self.batch_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._send_state(rows=False)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def batch_progress(self, event: dict) -> None:
        await self._send_state()

    async def batch_status(self, event: dict) -> None:
        await self._send_state()

    async def operation_progress(self, event: dict) -> None:
        await self._send_state(rows=False)

    async def _send_state(self, rows: bool = True) -> None:
        message = await self._render(rows)
        if message is None:  # deleted meanwhile
            await self.close(code=FORBIDDEN)
        elif message:
            await self.send(text_data=message)

    @db_read
    def _may_see(self) -> bool:
        return self._visible() is not None

    def _visible(self) -> tuple[Batch, Operation] | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        try:
            return selectors.operation_get_visible(user, self.batch_id, self.seq)
        except Http404:
            return None

    @db_read
    def _render(self, rows: bool) -> str | None:
        """The live block when the operation or its batch's status changed since it was last
        sent ("" when nothing did); with `rows`, its result rows too (they come with a finish)."""
        found = self._visible()
        if found is None:
            return None
        batch, operation = found
        version = (
            batch.status,
            operation.status,
            operation.attempts,
            operation.state,
            operation.error,
            operation.progress,
            operation.log,
        )
        if version == self.shown:
            return ""
        self.shown = version
        context = operation_page_context(self.scope["user"], batch, operation)
        html = oob(render_to_string("jobs/operation_detail.html#live", context))
        if rows:
            html += oob(render_to_string("jobs/operation_detail.html#rows", context))
        return html


class DashboardConsumer(EventConsumer):
    """The dashboard of one user: totals, the active batches' cards, the recently finished list.

    Progress changes a card in place (a batch the page does not show yet is put first). A status
    change redraws the totals, the active list (a batch that finished leaves it) and the finished
    list."""

    groups: list[str] = []

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=FORBIDDEN)
            return
        self.shown: set[str] = set()
        # Staff see everyone's batches: their dashboard follows the group of all batches, and only
        # that one (their own batches' events also reach their owner group: each would come twice).
        # Others follow their own batches and those of their teams (as of the connect).
        self.groups = [publisher.ALL_GROUP] if user.is_staff else await self._groups_of(user)
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        for message in await self._render_all():
            await self.send(text_data=message)

    async def disconnect(self, code: int) -> None:
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    @db_read
    def _groups_of(self, user) -> list[str]:
        teams = access.teams_where(user, "view").values_list("pk", flat=True)
        return [publisher.owner_group(user.pk), *(publisher.team_group(pk) for pk in teams)]

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

    @db_read
    def _render_card(self, batch_id: str) -> str:
        batch = _visible_batch(self.scope["user"], batch_id)
        return self._card(batch) if batch is not None else ""

    @db_read
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


class WorkersConsumer(AsyncWebsocketConsumer):
    """The workers page (staff): the whole live block, re-read and sent at every worker heartbeat
    interval (at most every 2 s) while the page is open, and only when it changed. Workers report
    through the registry in Redis rather than through events, and a dead worker sends nothing:
    the page learns of it when its entry has expired, so it is read on a timer, server-side."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=FORBIDDEN)
            return
        self.shown = ""
        self.refresher = asyncio.ensure_future(self._refresh())

    async def disconnect(self, code: int) -> None:
        refresher = getattr(self, "refresher", None)
        if refresher is not None:
            refresher.cancel()

    async def _refresh(self) -> None:
        interval = min(2.0, settings.BATCHSITE_HEARTBEAT_S)
        while True:
            html = await self._render()
            if html != self.shown:
                self.shown = html
                await self.send(text_data=html)
            await asyncio.sleep(interval)

    @db_read
    def _render(self) -> str:
        return oob(render_to_string("jobs/workers.html#live", workers_context()))
