"""A short-lived cache of experiment bodies for pollers.

Pipelines and dashboards poll `GET /v1/experiments/{id}` in tight loops, often
many clients on the same experiment. Within POLL_CACHE_SECONDS of a read the API
answers a repeated poll from memory, on the event loop, without a thread or a
query. For as long again it still answers from memory while one background read
refreshes the entry (stale-while-revalidate), so pollers never queue behind a
read; concurrent misses for one experiment share a single read. An answer is
therefore at most about twice POLL_CACHE_SECONDS old (progress itself moves only
at heartbeats, every HEARTBEAT_INTERVAL); a cancel through this process evicts
its entry at once.

Measured with bench/faults_load.py's pollers (200 clients, 8 experiments, one API
process beside the load generator on this 2-core machine): a 0.5 s cache that
made pollers wait for each refresh gave p99 304 ms; with a 10 s cache, 167 ms.

Entries are keyed by (experiment id, tenant scope), so a tenant never gets
another tenant's answer, and only bodies up to `max_body` bytes are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

Key = tuple[str, str | None]
Fetch = Callable[[], Awaitable[bytes]]
log = logging.getLogger("benignity.api")


class PollCache:
    """An LRU of (body, fresh until) with single-flight reads and background refresh."""

    def __init__(self, ttl: float, max_entries: int = 4096, max_body: int = 256 * 1024) -> None:
        self.ttl, self.max_entries, self.max_body = ttl, max_entries, max_body
        self._entries: OrderedDict[Key, tuple[bytes, float, Fetch]] = OrderedDict()
        self._inflight: dict[Key, asyncio.Future[bytes]] = {}
        self._refreshing: set[asyncio.Task[None]] = set()
        self._evictions: dict[str, int] = {}  # per experiment: a read begun before one is not kept

    async def get(self, key: Key, fetch: Fetch) -> bytes:
        """The cached body for `key`, or `fetch()`'s, shared with concurrent callers."""
        if self.ttl <= 0:
            return await fetch()
        body = self.peek(key)
        if body is not None:
            return body
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the shared read
                return await fetch()
        return await self._read(key, fetch)

    def peek(self, key: Key) -> bytes | None:
        """The body for `key` if fresh or stale (then refreshed in the background with the
        read that stored it), without waiting; None when there is none."""
        hit = self._entries.get(key)
        now = time.monotonic()
        if hit is None or now >= hit[1] + self.ttl:
            return None
        self._entries.move_to_end(key)
        if now >= hit[1] and key not in self._inflight:
            self._refresh(key, hit[2])  # stale: answer now, read again in the background
        return hit[0]

    async def _read(self, key: Key, fetch: Fetch) -> bytes:
        return await self._finish(key, fetch, *self._begin(key))

    def _begin(self, key: Key) -> tuple[asyncio.Future[bytes], int]:
        """Register a read of `key` (synchronously, so no second one starts meanwhile)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        return future, self._evictions.get(key[0], 0)

    async def _finish(
        self, key: Key, fetch: Fetch, future: asyncio.Future[bytes], evictions: int
    ) -> bytes:
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
            if self._inflight.get(key) is future:
                del self._inflight[key]
        future.set_result(body)
        if self._evictions.get(key[0], 0) == evictions:
            self._store(key, body, fetch)
        return body

    def _refresh(self, key: Key, fetch: Fetch) -> None:
        begun = self._begin(key)

        async def refresh() -> None:
            try:
                await self._finish(key, fetch, *begun)
            except Exception as exc:  # noqa: BLE001 - the next poll reads for itself and sees it
                self._entries.pop(key, None)
                log.debug("background refresh of %s failed: %s", key[0], exc)

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshing.add(task)  # keep a reference until it ends
        task.add_done_callback(self._refreshing.discard)

    def _store(self, key: Key, body: bytes, fetch: Fetch) -> None:
        if len(body) > self.max_body:
            return
        self._entries[key] = (body, time.monotonic() + self.ttl, fetch)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def evict(self, experiment_id: str) -> None:
        """Forget every tenant's entry for the experiment (after a change made here)."""
        self._evictions[experiment_id] = self._evictions.get(experiment_id, 0) + 1
        if len(self._evictions) > self.max_entries:  # bounded: forget the oldest counters
            self._evictions.pop(next(iter(self._evictions)))
        for key in [k for k in self._entries if k[0] == experiment_id]:
            del self._entries[key]
