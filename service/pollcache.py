"""A short-lived cache of experiment bodies for pollers.

Pipelines and dashboards poll `GET /v1/experiments/{id}` in tight loops, often
many clients on the same experiment. Within POLL_CACHE_SECONDS the API answers a
repeated poll from memory, on the event loop, without a thread or a query, and
concurrent misses for one experiment share a single database read. An answer is
at most that many seconds old (progress itself moves only at heartbeats, every
HEARTBEAT_INTERVAL); a cancel through this process evicts its entry at once.

Entries are keyed by (experiment id, tenant scope), so a tenant never gets
another tenant's answer, and only bodies up to `max_body` bytes are kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

Key = tuple[str, str | None]


class PollCache:
    """An LRU of (body, expiry) with single-flight misses."""

    def __init__(self, ttl: float, max_entries: int = 4096, max_body: int = 256 * 1024) -> None:
        self.ttl, self.max_entries, self.max_body = ttl, max_entries, max_body
        self._entries: OrderedDict[Key, tuple[bytes, float]] = OrderedDict()
        self._inflight: dict[Key, asyncio.Future[bytes]] = {}

    async def get(self, key: Key, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """The cached body for `key`, or `fetch()`'s, shared with concurrent callers."""
        if self.ttl <= 0:
            return await fetch()
        hit = self._entries.get(key)
        if hit is not None and hit[1] > time.monotonic():
            self._entries.move_to_end(key)
            return hit[0]
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the shared read
                return await fetch()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            body = await fetch()
        except asyncio.CancelledError:
            future.cancel()  # the reading request went away; waiters read for themselves
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unshared failure is not logged twice
            raise
        finally:
            del self._inflight[key]
        future.set_result(body)
        self._store(key, body)
        return body

    def _store(self, key: Key, body: bytes) -> None:
        if len(body) > self.max_body:
            return
        self._entries[key] = (body, time.monotonic() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def evict(self, experiment_id: str) -> None:
        """Forget every tenant's entry for the experiment (after a change made here)."""
        for key in [k for k in self._entries if k[0] == experiment_id]:
            del self._entries[key]
