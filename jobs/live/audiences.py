"""The pages of one batch in a web server process hear its events once.

When every page's socket joined the batch's channel-layer group, each event became one message per
page, queued, decoded and dispatched through Channels' consumer machinery: with a thousand pages on
one batch that kept a daphne process busy for about a second per event, and frames fell behind.
Here one listener per batch and process joins the group and hands each event to the pages of this
process in turn; each page reads the shared snapshot (jobs.live.snapshots) and sends what it lacks.
"""

import asyncio
import logging
from typing import Any, Protocol

from jobs.live.publisher import batch_group

logger = logging.getLogger(__name__)


class Page(Protocol):
    async def on_event(self, event: dict[str, Any]) -> None: ...


class Audience:
    def __init__(self, batch_id: str, layer: Any) -> None:
        self.batch_id = batch_id
        self.layer = layer
        self.pages: set[Page] = set()
        self.channel = ""
        self.listener: asyncio.Future | None = None
        self.ready = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(batch_group(self.batch_id), self.channel)
        self.listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        while True:
            event = await self.layer.receive(self.channel)
            for page in list(self.pages):
                try:
                    await page.on_event(event)
                except Exception:
                    logger.warning("live: a page of batch %s failed on an event", self.batch_id, exc_info=True)

    async def _stop(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
        if self.channel:
            await self.layer.group_discard(batch_group(self.batch_id), self.channel)


# By event loop and batch: tests run one loop per test, a server one for its life.
_audiences: dict[tuple[int, str], Audience] = {}


async def join(batch_id: str, page: Page, layer: Any) -> None:
    """From now on `page.on_event(event)` is called with each event of the batch."""
    key = (id(asyncio.get_running_loop()), batch_id)
    audience = _audiences.get(key)
    if audience is None:
        audience = _audiences[key] = Audience(batch_id, layer)
    # Added before any await: a page leaving meanwhile never sees this audience empty.
    audience.pages.add(page)
    await asyncio.shield(audience.ready)


async def leave(batch_id: str, page: Page) -> None:
    key = (id(asyncio.get_running_loop()), batch_id)
    audience = _audiences.get(key)
    if audience is None or page not in audience.pages:
        return
    audience.pages.discard(page)
    if not audience.pages:
        del _audiences[key]
        await asyncio.gather(audience.ready, return_exceptions=True)
        await audience._stop()
