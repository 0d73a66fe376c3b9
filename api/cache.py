"""A small cache interface with an in-process and a Redis implementation.

The app needs only a handful of primitives (values with TTL, a rate-limit counter, deny-list
sets and pub/sub fan-out for GraphQL subscriptions). Keeping them behind one interface lets a
single API process run without Redis, while several processes share state through Redis.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

logger = logging.getLogger(__name__)


def _positive(seconds: float, name: str) -> float:
    """Reject zero/negative durations up front: Redis errors on them, so both backends do."""
    if seconds <= 0:
        raise ValueError(f"{name} must be positive, got {seconds!r}")
    return seconds


def _ms(seconds: float) -> int:
    """Milliseconds for Redis, rounded up so a tiny positive duration never becomes 0."""
    return max(1, math.ceil(seconds * 1000))


class Cache(abc.ABC):
    """What the app may ask of a cache; both implementations pass the same contract tests."""

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """The value of `key`, or None when missing or expired."""

    @abc.abstractmethod
    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store `value`; it expires after `ttl` seconds, or never when ttl is None."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove `key` (a value, counter or set); missing keys are fine."""

    @abc.abstractmethod
    async def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one hit in a fixed window, for rate limiting.

        The first hit starts a window of `window` seconds. Returns the count within the current
        window and the seconds until it resets. Atomic, also across processes sharing a Redis.
        """

    @abc.abstractmethod
    async def set_add(self, key: str, member: str, ttl: float | None = None) -> None:
        """Add `member` to the set; a ttl (re)sets the expiry of the whole set."""

    @abc.abstractmethod
    async def set_contains(self, key: str, member: str) -> bool:
        """Whether `member` is in the set (False when the set is missing or expired)."""

    @abc.abstractmethod
    async def set_remove(self, key: str, member: str) -> None:
        """Remove `member`; removing the last member removes the set."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Send `message` to current subscribers of `channel` (at most once, not stored)."""

    @abc.abstractmethod
    def subscribe(self, channel: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[str]]:
        """Receive messages published to `channel`.

        The subscription is active once the context is entered, so a publish after that is
        received. Leaving the context unsubscribes and ends the iterator.
        """

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Readiness probe: True when the backend is reachable. Never raises."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and end active subscriptions (used at app shutdown)."""


@dataclass(slots=True)
class _Entry:
    value: str | set[str]
    expires_at: float | None  # time.monotonic() deadline


class _QueueMessages:
    """Iterator over one in-process subscriber's queue; None in the queue means 'closed'."""

    def __init__(self, queue: asyncio.Queue[str | None]) -> None:
        self._queue = queue

    def __aiter__(self) -> _QueueMessages:
        return self

    async def __anext__(self) -> str:
        message = await self._queue.get()
        if message is None:
            self._queue.put_nowait(None)  # keep the end marker for any later __anext__
            raise StopAsyncIteration
        return message


class InProcessCache(Cache):
    """Cache for a single process: plain dicts on the event loop, no threads, no locks.

    Each operation runs without awaiting in between, so it is atomic on the event loop. Expired
    entries are dropped when touched, and swept at most every `sweep_interval` seconds on writes,
    so keys nobody reads again do not pile up.

    Pub/sub gives each subscriber a bounded queue. A subscriber that falls `queue_size` messages
    behind loses its oldest messages: publishers never block on a slow consumer.
    """

    def __init__(self, *, queue_size: int = 1000, sweep_interval: float = 60.0) -> None:
        self._data: dict[str, _Entry] = {}
        self._subscribers: dict[str, set[asyncio.Queue[str | None]]] = {}
        self._queue_size = queue_size
        self._sweep_interval = sweep_interval
        self._next_sweep = time.monotonic() + sweep_interval

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            del self._data[key]
            return None
        return entry

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        expired = [
            k for k, e in self._data.items() if e.expires_at is not None and e.expires_at <= now
        ]
        for key in expired:
            del self._data[key]

    def _string(self, key: str, now: float) -> str | None:
        entry = self._live(key, now)
        if entry is None:
            return None
        if not isinstance(entry.value, str):
            raise TypeError(f"key {key!r} holds a set, not a value")
        return entry.value

    def _members(self, key: str, now: float) -> set[str] | None:
        entry = self._live(key, now)
        if entry is None:
            return None
        if not isinstance(entry.value, set):
            raise TypeError(f"key {key!r} holds a value, not a set")
        return entry.value

    async def get(self, key: str) -> str | None:
        return self._string(key, time.monotonic())

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        now = time.monotonic()
        self._maybe_sweep(now)
        expires_at = None if ttl is None else now + _positive(ttl, "ttl")
        self._data[key] = _Entry(value, expires_at)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        _positive(window, "window")
        now = time.monotonic()
        self._maybe_sweep(now)
        value = self._string(key, now)
        entry = self._data.get(key)
        if value is None or entry is None or entry.expires_at is None:
            count, expires_at = 1, now + window  # new window; also repairs a counter without TTL
        else:
            count, expires_at = int(value) + 1, entry.expires_at
        # Stored as a string, as Redis INCR does, so get() reads a counter the same on both.
        self._data[key] = _Entry(str(count), expires_at)
        # (now + window) - now can exceed window by a rounding step: never report more.
        return count, min(window, expires_at - now)

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> None:
        now = time.monotonic()
        self._maybe_sweep(now)
        expires_at = None if ttl is None else now + _positive(ttl, "ttl")
        members = self._members(key, now)
        if members is None:
            self._data[key] = _Entry({member}, expires_at)
            return
        members.add(member)
        if expires_at is not None:
            self._data[key].expires_at = expires_at

    async def set_contains(self, key: str, member: str) -> bool:
        members = self._members(key, time.monotonic())
        return members is not None and member in members

    async def set_remove(self, key: str, member: str) -> None:
        members = self._members(key, time.monotonic())
        if members is None:
            return
        members.discard(member)
        if not members:
            del self._data[key]

    async def publish(self, channel: str, message: str) -> None:
        for queue in self._subscribers.get(channel, ()):
            if queue.full():
                queue.get_nowait()  # drop the oldest rather than block the publisher
            queue.put_nowait(message)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=self._queue_size)
        self._subscribers.setdefault(channel, set()).add(queue)
        try:
            yield _QueueMessages(queue)
        finally:
            self._unsubscribe(channel, queue)

    def _unsubscribe(self, channel: str, queue: asyncio.Queue[str | None]) -> None:
        queues = self._subscribers.get(channel)
        if queues is None or queue not in queues:
            return
        queues.discard(queue)
        if not queues:
            del self._subscribers[channel]
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)  # wake and end an iterator that is waiting on this queue

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        for channel, queues in list(self._subscribers.items()):
            for queue in list(queues):
                self._unsubscribe(channel, queue)
        self._data.clear()


# INCR, and start the window when the key has no expiry yet. Checking PTTL instead of count == 1
# also repairs a counter that somehow lost its TTL, which would otherwise block a client forever.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""

_PING_TIMEOUT = 2.0  # seconds; a probe must answer even when Redis is black-holed


class _PubSubMessages:
    """Iterator over one Redis pub/sub connection (one connection per subscription)."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub
        self._closed = False

    def __aiter__(self) -> _PubSubMessages:
        return self

    async def __anext__(self) -> str:
        while not self._closed:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            except RedisConnectionError:
                if self._closed:  # aclose() cut the connection under a waiting reader
                    break
                raise
            if message is not None and message["type"] == "message":
                return message["data"]
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed = True
        await self._pubsub.aclose()


class RedisCache(Cache):
    """Cache shared by all API processes through Redis.

    Every key and channel is prefixed with `prefix`, so several deployments (or test runs) can
    share one server.

    Commands use a blocking pool of `max_connections`: a burst of requests waits for a free
    connection instead of failing with "Too many connections" (redis-py's default pool caps at
    100 and raises). Each subscription holds its own connection for as long as it lasts, so
    subscriptions get a separate pool of `max_subscriptions`: many open GraphQL subscriptions
    then cannot starve rate limiting and token checks of connections.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "qudao:",
        *,
        max_connections: int = 50,
        max_subscriptions: int = 1000,
    ) -> None:
        self.prefix = prefix
        self._client = redis.Redis.from_pool(
            redis.BlockingConnectionPool.from_url(
                url, decode_responses=True, max_connections=max_connections
            )
        )
        self._pubsub_client = redis.Redis.from_url(
            url, decode_responses=True, max_connections=max_subscriptions
        )
        self._hit = self._client.register_script(_HIT_SCRIPT)
        self._subscriptions: set[_PubSubMessages] = set()

    async def get(self, key: str) -> str | None:
        return await self._client.get(self.prefix + key)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        px = None if ttl is None else _ms(_positive(ttl, "ttl"))
        await self._client.set(self.prefix + key, value, px=px)

    async def delete(self, key: str) -> None:
        await self._client.delete(self.prefix + key)

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        count, ttl_ms = await self._hit(
            keys=[self.prefix + key], args=[_ms(_positive(window, "window"))]
        )
        return int(count), int(ttl_ms) / 1000

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> None:
        name = self.prefix + key
        if ttl is None:
            await self._client.sadd(name, member)
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.sadd(name, member)
            pipe.pexpire(name, _ms(_positive(ttl, "ttl")))
            await pipe.execute()

    async def set_contains(self, key: str, member: str) -> bool:
        return bool(await self._client.sismember(self.prefix + key, member))

    async def set_remove(self, key: str, member: str) -> None:
        await self._client.srem(self.prefix + key, member)

    async def publish(self, channel: str, message: str) -> None:
        await self._client.publish(self.prefix + channel, message)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        pubsub = self._pubsub_client.pubsub()
        messages = _PubSubMessages(pubsub)
        self._subscriptions.add(messages)
        try:
            await pubsub.subscribe(self.prefix + channel)
            # SUBSCRIBE only sends the command; the server's confirmation is what guarantees
            # that a publish made after this point reaches us.
            while (confirmation := await pubsub.get_message(timeout=None)) is None or (
                confirmation["type"] != "subscribe"
            ):
                pass
            yield messages
        finally:
            self._subscriptions.discard(messages)
            await messages.aclose()

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(_PING_TIMEOUT):
                return bool(await self._client.ping())
        except Exception as exc:  # a probe reports, it does not crash the caller
            logger.warning("redis ping failed: %r", exc)
            return False

    async def close(self) -> None:
        for messages in list(self._subscriptions):
            await messages.aclose()
        await self._pubsub_client.aclose()
        await self._client.aclose()


def create_cache(redis_url: str | None, prefix: str = "qudao:") -> Cache:
    """Redis when configured (several processes share state), else an in-process cache."""
    if redis_url:
        return RedisCache(redis_url, prefix)
    return InProcessCache()
