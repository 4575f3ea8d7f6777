"""The pollers' cache: fresh hits cost nothing, stale hits refresh in the background,
concurrent misses share one read, and an eviction is never undone by an older read."""

from __future__ import annotations

import asyncio

from service.pollcache import PollCache


class Reads:
    """A fetch that counts its calls and can be held open."""

    def __init__(self) -> None:
        self.calls, self.gate = 0, asyncio.Event()
        self.gate.set()

    async def __call__(self) -> bytes:
        self.calls += 1
        n = self.calls
        await self.gate.wait()
        return f"v{n}".encode()


async def until(condition, what: str) -> None:
    """Yield to the loop until `condition()` holds (a bounded number of times)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


def test_fresh_hits_do_not_read_and_keys_are_per_tenant():
    async def run() -> None:
        cache, reads = PollCache(ttl=60), Reads()
        assert await cache.get(("e1", "lab-a"), reads) == b"v1"
        assert await cache.get(("e1", "lab-a"), reads) == b"v1"
        assert reads.calls == 1
        assert await cache.get(("e1", "lab-b"), reads) == b"v2"  # another tenant reads its own
        assert reads.calls == 2

    asyncio.run(run())


def test_concurrent_misses_share_one_read():
    async def run() -> None:
        cache, reads = PollCache(ttl=60), Reads()
        reads.gate.clear()
        waiting = [asyncio.create_task(cache.get(("e1", None), reads)) for _ in range(50)]
        await until(lambda: reads.calls == 1, "the first read started")
        for _ in range(5):
            await asyncio.sleep(0)  # every other task is now waiting on that read
        reads.gate.set()
        assert await asyncio.gather(*waiting) == [b"v1"] * 50
        assert reads.calls == 1

    asyncio.run(run())


def test_a_stale_hit_answers_at_once_and_refreshes_in_the_background():
    async def run() -> None:
        cache, reads = PollCache(ttl=0.05), Reads()
        assert await cache.get(("e1", None), reads) == b"v1"
        await asyncio.sleep(0.06)  # stale, inside the second ttl
        reads.gate.clear()
        assert await cache.get(("e1", None), reads) == b"v1"  # not held by the open read
        await asyncio.sleep(0)  # the background read starts
        assert reads.calls == 2
        reads.gate.set()
        await until(lambda: cache.peek(("e1", None)) == b"v2", "the refresh was stored")
        assert await cache.get(("e1", None), reads) == b"v2"
        await asyncio.sleep(0.12)  # past both windows: a blocking read
        assert await cache.get(("e1", None), reads) == b"v3"

    asyncio.run(run())


def test_an_eviction_is_not_undone_by_a_read_that_began_before_it():
    async def run() -> None:
        cache, reads = PollCache(ttl=60), Reads()
        reads.gate.clear()
        before = asyncio.create_task(cache.get(("e1", None), reads))
        await until(lambda: reads.calls == 1, "the read began")
        cache.evict("e1")  # e.g. a cancel committed meanwhile
        reads.gate.set()
        assert await before == b"v1"  # its caller gets what it read...
        assert await cache.get(("e1", None), reads) == b"v2"  # ...but it was not kept

    asyncio.run(run())


def test_ttl_zero_reads_every_time():
    async def run() -> None:
        cache, reads = PollCache(ttl=0), Reads()
        for _ in range(3):
            await cache.get(("e1", None), reads)
        assert reads.calls == 3

    asyncio.run(run())


def test_many_stale_hits_start_one_refresh():
    async def run() -> None:
        cache, reads = PollCache(ttl=0.05), Reads()
        await cache.get(("e1", None), reads)
        await asyncio.sleep(0.06)
        reads.gate.clear()
        answers = await asyncio.gather(*(cache.get(("e1", None), reads) for _ in range(20)))
        await asyncio.sleep(0)
        assert answers == [b"v1"] * 20 and reads.calls == 2
        reads.gate.set()
        await until(lambda: cache.peek(("e1", None)) == b"v2", "the refresh was stored")
        assert await cache.get(("e1", None), reads) == b"v2" and reads.calls == 2

    asyncio.run(run())
