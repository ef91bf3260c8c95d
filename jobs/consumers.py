"""WebSocket consumers: push the page's own partials (htmx out-of-band swaps) when a batch changes.

Events from jobs.events say which batch changed and its counters; the consumer renders the true
state from the database, so a missed or reordered event cannot leave a page wrong, and on
(re)connect it sends the current state at once. Anonymous users and another user's batch are
refused with close code 4403 after accept: a refused handshake looks like a network error to
htmx, which would retry forever.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from jobs import events, selectors
from jobs.models import Operation

FORBIDDEN = 4403


def oob(html: str, swap: str = "true") -> str:
    """Mark the fragment's top element as an out-of-band swap (by default: replace it by id)."""
    html = html.strip()
    end = html.index(">")
    return f'{html[:end]} hx-swap-oob="{swap}"{html[end:]}'


class BatchConsumer(AsyncWebsocketConsumer):
    """One batch page: the live block (status, bar, counts, ETA, actions) and changed rows."""

    group = ""

    async def connect(self) -> None:
        await self.accept()
        self.batch_id = str(self.scope["url_route"]["kwargs"]["batch_id"])
        self.last_version = -1
        if not await self._may_see():
            await self.close(code=FORBIDDEN)
            return
        self.group = events.batch_group(self.batch_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._send_state(())

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def batch_progress(self, event: dict) -> None:
        # A progress event older than what the page shows brings no new counters, but its rows
        # may not have been sent yet (they are rendered from the database, so they are current).
        await self._send_state(event.get("operation_ids", ()), counters=event["version"] > self.last_version)

    async def batch_status(self, event: dict) -> None:
        await self._send_state(event.get("operation_ids", ()))

    async def _send_state(self, operation_ids, counters: bool = True) -> None:
        live, rows, version = await self._render(tuple(operation_ids))
        if live is None:  # deleted meanwhile
            await self.close(code=FORBIDDEN)
            return
        if counters:
            self.last_version = max(self.last_version, version)
            await self.send(text_data=live)
        if rows:
            # Rows travel in their own message: htmx loses content when rows and divs mix.
            await self.send(text_data=rows)

    @database_sync_to_async
    def _may_see(self) -> bool:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return False
        return selectors.batches_visible_to(user).filter(pk=self.batch_id).exists()

    @database_sync_to_async
    def _render(self, operation_ids: tuple[int, ...]):
        batch = (
            selectors.batches_visible_to(self.scope["user"]).select_related("owner").filter(pk=self.batch_id).first()
        )
        if batch is None:
            return None, "", 0
        live = oob(render_to_string("jobs/batch_detail.html#live", {"batch": batch}))
        operations = Operation.objects.filter(batch=batch, pk__in=operation_ids) if operation_ids else ()
        rows = "".join(oob(render_to_string("jobs/batch_detail.html#row", {"operation": op})) for op in operations)
        return live, rows, batch.version


class DashboardConsumer(AsyncWebsocketConsumer):
    """The dashboard of one user: totals, the active batches' cards, the recently finished list.

    Cards change in place; a batch the page does not show yet (created after it loaded) is put
    first in the active list. Status changes also redraw the totals and the finished list."""

    group = ""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=FORBIDDEN)
            return
        self.shown: set[str] = set()
        self.group = events.owner_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        if user.is_staff:
            # Staff see everyone's batches; their dashboard follows every owner.
            await self.channel_layer.group_add(events.ALL_GROUP, self.channel_name)
        for message in await self._render_all():
            await self.send(text_data=message)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.channel_layer.group_discard(events.ALL_GROUP, self.channel_name)

    async def batch_progress(self, event: dict) -> None:
        card = await self._render_card(event["batch_id"])
        if card:
            await self.send(text_data=card)

    async def batch_status(self, event: dict) -> None:
        for message in await self._render_all(changed=event["batch_id"]):
            await self.send(text_data=message)

    def _card(self, batch) -> str:
        html = render_to_string("jobs/dashboard.html#card", {"batch": batch})
        if str(batch.pk) in self.shown:
            return oob(html)
        self.shown.add(str(batch.pk))
        # A wrapper: its content goes first into #active-batches, and the placeholder leaves.
        return f'<div hx-swap-oob="afterbegin:#active-batches">{html}</div><p id="no-active" hx-swap-oob="delete"></p>'

    @database_sync_to_async
    def _render_card(self, batch_id: str) -> str:
        batch = selectors.batches_visible_to(self.scope["user"]).select_related("owner").filter(pk=batch_id).first()
        return self._card(batch) if batch is not None else ""

    @database_sync_to_async
    def _render_all(self, changed: str | None = None) -> list[str]:
        """Totals and (on connect) the whole active list, or the changed batch's card; then the
        finished list in a message of its own (table rows do not mix with divs)."""
        context = selectors.dashboard_context(self.scope["user"])
        tiles = oob(render_to_string("jobs/dashboard.html#tiles", context))
        if changed is None:
            self.shown = {str(batch.pk) for batch in context["active"]}
            body = oob(render_to_string("jobs/dashboard.html#active", context))
        else:
            batch = selectors.batches_visible_to(self.scope["user"]).filter(pk=changed).first()
            body = self._card(batch) if batch is not None else ""
        recent = oob(render_to_string("jobs/dashboard.html#recent", context))
        return [tiles + body, recent]
