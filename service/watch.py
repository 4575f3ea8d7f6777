"""The long-poll: `GET /v1/experiments/{id}?wait=S` answers as soon as the experiment's
status or progress changes, or after S seconds (at most MAX_WAIT).

Many clients may wait on one experiment, and on many experiments at once, so no
waiter reads the database while it waits. One `Watcher` per API process reads the
status and progress of every watched experiment in one query each WATCH_INTERVAL
(0.25 s), and only while someone waits. When an experiment's state differs from
its last read, the watcher drops it from the poll cache and wakes its waiters;
they read the body again through the poll cache, which shares that one read among
them. A waiter answers when the body's ETag differs from the client's view: its
If-None-Match, or else the body it found on arrival. A client that goes away is
released at once.

So a change is answered within about WATCH_INTERVAL plus two reads of the change
being committed, whatever the number of waiters: with 50 waiters on one
experiment, the database sees one state read per tick and one body read per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from prometheus_client import Counter, Gauge
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import Database
from service.models import Experiment, WorkItem
from service.pollcache import PollCache
from service.responses import etag_of, matches

log = logging.getLogger("benignity.api")

#: The longest a long-poll waits (seconds); a larger `wait` is capped to it.
MAX_WAIT = 60.0
#: Experiments per state query (one tick may run several when very many are watched).
BATCH = 500

READS = Counter("benignity_watch_reads_total", "State reads of the long-poll watcher")
WAITERS = Gauge("benignity_watch_waiters", "Long-polls waiting now")

State = tuple[str, int, int]  # status, progress done, progress total
Read = Callable[[], Awaitable[bytes]]


def states(session: Session, experiment_ids: Sequence[str]) -> dict[str, State]:
    """Status, units done and units planned of each experiment that exists, in one query."""
    done = (
        select(func.coalesce(func.sum(WorkItem.progress_done), 0))
        .where(WorkItem.experiment_id == Experiment.id)
        .scalar_subquery()
    )
    query = select(Experiment.id, Experiment.status, done, Experiment.progress_total).where(
        Experiment.id.in_(experiment_ids)
    )
    return {i: (s, int(d), int(t)) for i, s, d, t in session.execute(query)}


_UNREAD: Any = object()


@dataclass
class _Watch:
    """One watched experiment: its last read state, and an event set when it changes."""

    waiters: int = 0
    state: State | None = _UNREAD  # None: the experiment is gone
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()


class Watcher:
    """Reads the state of every watched experiment once per `interval`, while any is."""

    def __init__(self, database: Callable[[], Database], polls: PollCache, interval: float):
        self.database, self.polls, self.interval = database, polls, interval
        self.watches: dict[str, _Watch] = {}
        self.reads = 0  # state reads so far (each one query over up to BATCH experiments)
        self._task: asyncio.Task[None] | None = None

    @property
    def waiters(self) -> int:
        return sum(w.waiters for w in self.watches.values())

    @contextlib.contextmanager
    def watching(self, experiment_id: str) -> Iterator[_Watch]:
        """Register a waiter on the experiment for the block's duration."""
        watch = self.watches.get(experiment_id)
        if watch is None:
            watch = self.watches[experiment_id] = _Watch()
        watch.waiters += 1
        WAITERS.inc()
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())
        try:
            yield watch
        finally:
            WAITERS.dec()
            watch.waiters -= 1
            if watch.waiters == 0 and self.watches.get(experiment_id) is watch:
                del self.watches[experiment_id]

    async def _run(self) -> None:
        try:
            while self.watches:
                ids = list(self.watches)
                try:
                    found = await self._read(ids)
                except Exception as exc:  # noqa: BLE001 - waiters time out and answer as they can
                    log.warning("long-poll watcher could not read: %s", exc)
                else:
                    self._compare(ids, found)
                await asyncio.sleep(self.interval)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _read(self, ids: list[str]) -> dict[str, State]:
        def read(session: Session) -> dict[str, State]:
            out: dict[str, State] = {}
            for start in range(0, len(ids), BATCH):
                out.update(states(session, ids[start : start + BATCH]))
            return out

        found = await self.database().run(read)
        self.reads += 1
        READS.inc()
        return found

    def _compare(self, ids: list[str], found: dict[str, State]) -> None:
        for experiment_id in ids:
            watch = self.watches.get(experiment_id)
            state = found.get(experiment_id)
            if watch is None or watch.state == state:
                continue
            # The first read bumps too: its waiters' bodies may predate it.
            watch.state = state
            self.polls.evict(experiment_id)
            watch.bump()


async def long_poll(request: Request, experiment_id: str, read: Read, seconds: float) -> bytes:
    """The experiment's body once it differs from the client's view, or after `seconds`."""
    watcher: Watcher = request.app.state.watcher
    twice = watcher.polls.ttl > 0  # without a poll cache every read is fresh
    seen = request.headers.get("if-none-match")
    deadline = time.monotonic() + min(seconds, MAX_WAIT)
    with watcher.watching(experiment_id) as watch:
        version = watch.version
        body = await _fresh(read, twice)
        if seen and not matches(seen, etag_of(body)):
            return body  # the client is behind already
        tag = etag_of(body)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                if watch.version == version and not await _changed(watch, gone, deadline):
                    return body
                if gone.done():
                    return body  # nobody to answer
                version = watch.version
                body = await _fresh(read, twice)
                if etag_of(body) != tag:
                    return body
        finally:
            gone.cancel()


async def _changed(watch: _Watch, gone: asyncio.Future[None], deadline: float) -> bool:
    """Wait for the watch to change, the client to leave or the deadline; False at the
    deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    changed: asyncio.Future[Any] = asyncio.ensure_future(watch.changed.wait())
    either: set[asyncio.Future[Any]] = {changed, gone}
    try:
        await asyncio.wait(either, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    finally:
        changed.cancel()
    return (changed.done() and not changed.cancelled()) or gone.done()


async def _fresh(read: Read, twice: bool) -> bytes:
    """The body through the poll cache, read `twice`: a first read may have joined one
    begun before the watcher's last eviction; the second then starts or joins a later one
    (and is answered from the cache when the first was not stale)."""
    body = await read()
    return await read() if twice else body


async def _disconnected(request: Request) -> None:
    """Return when the client closes the connection."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
