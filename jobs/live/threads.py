"""Where the live side's database reads run.

Channels' database_sync_to_async runs every call of a process on one thread (thread-sensitive
mode), so with many pages open each socket's read waited for every other socket's; and the
sessions of the WebSocket handshakes queued on that thread too. The reads here touch only their
own rows and render templates, nothing tied to a thread, so they run on the thread pool instead
and a busy process spreads them over its threads (still closing stale connections before and after).
"""

from channels.db import database_sync_to_async


def db_read(func):
    return database_sync_to_async(func, thread_sensitive=False)
