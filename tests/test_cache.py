"""Contract tests that every Cache implementation must pass.

The Redis variant runs only when QUDAO_TEST_REDIS_URL points at a server it may write to; each
test uses its own random key prefix and deletes what it created.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
import pytest_asyncio
import redis.asyncio as redis

from api.cache import Cache, InProcessCache, RedisCache, create_cache
from tests.conftest import REDIS_URL, service_missing

UNREACHABLE_URL = "redis://127.0.0.1:1/0"
SHORT = 0.2  # a TTL that must have expired after WAIT
WAIT = 0.45  # generous margin, so a slow machine does not make the tests flaky
RECEIVE_TIMEOUT = 2.0  # bound every wait for a message, so a lost one fails instead of hanging


@pytest_asyncio.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    if request.param == "memory":
        memory = InProcessCache()
        yield memory
        await memory.close()
        return
    if not REDIS_URL:
        service_missing("Redis", "set QUDAO_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    remote = RedisCache(REDIS_URL, prefix=f"qudao-test:{uuid4().hex}:")
    yield remote
    await remote.close()
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in raw.scan_iter(match=f"{remote.prefix}*")]
        if keys:
            await raw.delete(*keys)
    finally:
        await raw.aclose()


@pytest_asyncio.fixture
async def peer(cache: Cache) -> AsyncIterator[RedisCache]:
    """A second RedisCache on the same prefix: what another API process would see."""
    if not isinstance(cache, RedisCache):
        pytest.skip("sharing state between processes needs Redis")
    other = RedisCache(REDIS_URL or "", prefix=cache.prefix)
    yield other
    await other.close()


async def receive(messages: AsyncIterator[str]) -> str:
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        return await anext(messages)


async def test_get_set_delete(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", "v1")
    assert await cache.get("k") == "v1"
    await cache.set("k", "v2")
    assert await cache.get("k") == "v2"
    await cache.delete("k")
    assert await cache.get("k") is None
    await cache.delete("k")  # deleting a missing key is not an error


async def test_set_ttl_expires(cache: Cache) -> None:
    await cache.set("short", "v", ttl=SHORT)
    await cache.set("long", "v", ttl=30)
    await cache.set("replaced", "v", ttl=SHORT)
    await cache.set("replaced", "v2")  # a set without ttl makes the key permanent again
    await asyncio.sleep(WAIT)
    assert await cache.get("short") is None
    assert await cache.get("long") == "v"
    assert await cache.get("replaced") == "v2"


async def test_durations_must_be_positive(cache: Cache) -> None:
    with pytest.raises(ValueError):
        await cache.set("k", "v", ttl=0)
    with pytest.raises(ValueError):
        await cache.set_add("s", "m", ttl=-1)
    with pytest.raises(ValueError):
        await cache.hit("rate", 0)


async def test_hit_counts_and_reports_time_left(cache: Cache) -> None:
    count, left = await cache.hit("rate", 10)
    assert count == 1
    assert 9 < left <= 10
    count, left_again = await cache.hit("rate", 10)
    assert count == 2
    assert 9 < left_again <= left  # the window is not restarted by later hits
    assert await cache.hit("other", 10) == (1, pytest.approx(10, abs=1))


async def test_hit_window_resets(cache: Cache) -> None:
    await cache.hit("rate", SHORT)
    assert (await cache.hit("rate", SHORT))[0] == 2
    await asyncio.sleep(WAIT)
    count, left = await cache.hit("rate", SHORT)
    assert count == 1
    assert 0 < left <= SHORT


async def test_concurrent_hits_are_atomic(cache: Cache) -> None:
    results = await asyncio.gather(*(cache.hit("rate", 30) for _ in range(200)))
    assert sorted(count for count, _ in results) == list(range(1, 201))


async def test_hits_are_shared_between_processes(cache: Cache, peer: RedisCache) -> None:
    results = await asyncio.gather(*((cache, peer)[i % 2].hit("rate", 30) for i in range(200)))
    assert sorted(count for count, _ in results) == list(range(1, 201))


async def test_set_membership(cache: Cache) -> None:
    assert not await cache.set_contains("revoked", "a")
    await cache.set_add("revoked", "a")
    await cache.set_add("revoked", "b")
    await cache.set_add("revoked", "a")
    assert await cache.set_contains("revoked", "a")
    assert await cache.set_contains("revoked", "b")
    assert not await cache.set_contains("revoked", "c")
    await cache.set_remove("revoked", "a")
    await cache.set_remove("revoked", "missing")
    assert not await cache.set_contains("revoked", "a")
    assert await cache.set_contains("revoked", "b")
    await cache.set_remove("revoked", "b")
    await cache.set_remove("never-created", "x")
    assert not await cache.set_contains("revoked", "b")


async def test_set_ttl_applies_to_whole_set(cache: Cache) -> None:
    await cache.set_add("short", "a", ttl=SHORT)
    await cache.set_add("short", "b")  # no ttl: keeps the set's expiry
    await cache.set_add("long", "a", ttl=30)
    await asyncio.sleep(WAIT)
    assert not await cache.set_contains("short", "a")
    assert not await cache.set_contains("short", "b")
    assert await cache.set_contains("long", "a")


async def test_memory_sweep_drops_keys_nobody_reads() -> None:
    memory = InProcessCache(sweep_interval=0)  # sweep on every write
    await memory.set("abandoned", "v", ttl=SHORT)
    await memory.set_add("abandoned-set", "m", ttl=SHORT)
    await asyncio.sleep(WAIT)
    await memory.set("fresh", "v")
    assert set(memory._data) == {"fresh"}


async def test_memory_slow_subscriber_loses_oldest_messages() -> None:
    memory = InProcessCache(queue_size=2)
    async with memory.subscribe("stock:1") as messages:
        for message in ("m1", "m2", "m3"):
            await memory.publish("stock:1", message)  # never blocks on the full queue
        assert [await receive(messages), await receive(messages)] == ["m2", "m3"]


async def test_publish_reaches_every_subscriber(cache: Cache) -> None:
    async with cache.subscribe("stock:1") as first, cache.subscribe("stock:1") as second:
        await cache.publish("stock:1", "m1")
        await cache.publish("stock:1", "m2")
        assert [await receive(first), await receive(first)] == ["m1", "m2"]
        assert [await receive(second), await receive(second)] == ["m1", "m2"]


async def test_channels_are_isolated(cache: Cache) -> None:
    async with cache.subscribe("stock:1") as one, cache.subscribe("stock:2") as two:
        await cache.publish("stock:1", "for-one")
        await cache.publish("stock:2", "for-two")
        assert await receive(two) == "for-two"  # would be "for-one" if channels leaked
        assert await receive(one) == "for-one"


async def test_nothing_delivered_after_unsubscribe(cache: Cache) -> None:
    async with cache.subscribe("stock:1") as witness:
        async with cache.subscribe("stock:1") as gone:
            pass
        await cache.publish("stock:1", "late")
        assert await receive(witness) == "late"  # proves the publish went out
        with pytest.raises(StopAsyncIteration):
            await receive(gone)


async def test_unsubscribe_ends_a_waiting_reader(cache: Cache) -> None:
    async with cache.subscribe("stock:1") as messages:
        reader = asyncio.create_task(anext(messages, None))
        await asyncio.sleep(0.05)  # let the reader block on the subscription
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        assert await reader is None


async def test_close_ends_subscriptions(cache: Cache) -> None:
    async with cache.subscribe("stock:1") as messages:
        await cache.close()
        with pytest.raises(StopAsyncIteration):
            await receive(messages)


async def test_publish_from_another_process(cache: Cache, peer: RedisCache) -> None:
    async with cache.subscribe("stock:1") as messages:
        await peer.publish("stock:1", "from-peer")
        assert await receive(messages) == "from-peer"


async def test_redis_frees_the_subscription(cache: Cache) -> None:
    if not isinstance(cache, RedisCache):
        pytest.skip("counts subscriptions on the Redis server")
    channel = f"{cache.prefix}stock:1"
    raw = redis.Redis.from_url(REDIS_URL or "", decode_responses=True)
    try:
        async with cache.subscribe("stock:1"):
            assert await raw.pubsub_numsub(channel) == [(channel, 1)]
        for _ in range(200):  # the server notices the closed connection shortly, not at once
            if await raw.pubsub_numsub(channel) == [(channel, 0)]:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the subscription was still open on the server 2s after leaving it")
    finally:
        await raw.aclose()


async def test_ping(cache: Cache) -> None:
    assert await cache.ping() is True


async def test_ping_unreachable_redis_returns_false() -> None:
    unreachable = RedisCache(UNREACHABLE_URL)
    try:
        assert await unreachable.ping() is False
    finally:
        await unreachable.close()


async def test_create_cache_picks_the_backend() -> None:
    memory = create_cache(None)
    assert isinstance(memory, InProcessCache)
    await memory.close()
    remote = create_cache(UNREACHABLE_URL, prefix="p:")  # builds without connecting
    assert isinstance(remote, RedisCache)
    assert remote.prefix == "p:"
    await remote.close()
