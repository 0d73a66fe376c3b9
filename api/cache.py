"""A small cache interface with an in-process and a Redis implementation.

The app needs only a handful of primitives (values with TTL, a rate-limit counter, deny-list
sets and pub/sub fan-out for GraphQL subscriptions). Keeping them behind one interface lets a
single API process run without Redis, while several processes share state through Redis.

Redis can go away; the API must not go with it. The Redis cache puts a circuit breaker in
front of every command: the first failure opens it (one log line for the outage), and while
it is open no command dials Redis: each fails at once with ``CacheUnavailable``, except that
one trial goes through every ``retry_interval`` seconds, and its success closes the breaker
(one more line). What each use does without Redis is decided per use:

* ``hit`` (rate limits, lockouts) counts in this process instead: limits hold per process;
* ``publish`` loses the events (subscriptions are at most once; the outbox keeps what must
  arrive), and a subscription waits and subscribes again when Redis is back;
* everything else raises ``CacheUnavailable``, which its caller turns into a decision (the
  deny-list check: a grace window, then 503) or, by default, a 503 with Retry-After.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)
T = TypeVar("T")

# What an unreachable (dead, restarting, black-holed) Redis raises; anything else is a bug.
_OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


class CacheUnavailable(Exception):
    """The shared cache cannot be reached now. ``retry_after``: seconds until it is tried
    again; ``down_for``: seconds since the outage began."""

    def __init__(self, retry_after: float, down_for: float) -> None:
        super().__init__("the cache (Redis) is unreachable")
        self.retry_after = retry_after
        self.down_for = down_for


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

    @property
    def outage(self) -> float | None:
        """Seconds since the backend became unreachable; None while it answers."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and end active subscriptions (used at app shutdown)."""


@dataclass(slots=True)
class _Entry:
    value: str | set[str]
    expires_at: float | None  # a deadline on the cache's clock (time.monotonic)


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

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        sweep_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._data: dict[str, _Entry] = {}
        self._subscribers: dict[str, set[asyncio.Queue[str | None]]] = {}
        self._queue_size = queue_size
        self._sweep_interval = sweep_interval
        self._clock = clock  # tests step it instead of sleeping through a TTL or a window
        self._next_sweep = clock() + sweep_interval

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
        return self._string(key, self._clock())

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        now = self._clock()
        self._maybe_sweep(now)
        expires_at = None if ttl is None else now + _positive(ttl, "ttl")
        self._data[key] = _Entry(value, expires_at)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        _positive(window, "window")
        now = self._clock()
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
        now = self._clock()
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
        members = self._members(key, self._clock())
        return members is not None and member in members

    async def set_remove(self, key: str, member: str) -> None:
        members = self._members(key, self._clock())
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
# A command gives up on a black-holed Redis after these, rather than hold its request.
_CONNECT_TIMEOUT = 1.0
_COMMAND_TIMEOUT = 2.0


class CircuitBreaker:
    """Closed while Redis answers; open from the first failure, when calls fail at once
    except one trial every ``retry_interval`` seconds. Logs the outage once, and its end."""

    def __init__(self, retry_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_interval = retry_interval
        self._clock = clock
        self.down_since: float | None = None
        self._next_trial = 0.0
        self._trial_running = False

    def before_call(self) -> None:
        """Raise CacheUnavailable unless the call may dial Redis (closed, or this is the
        trial of an open breaker)."""
        if self.down_since is None:
            return
        now = self._clock()
        if self._trial_running or now < self._next_trial:
            raise CacheUnavailable(max(0.0, self._next_trial - now), now - self.down_since)
        self._trial_running = True

    def succeeded(self) -> None:
        self._trial_running = False
        if self.down_since is not None:
            logger.warning(
                "redis answers again after %.1f s; shared rate limits, the deny list and "
                "subscriptions are back",
                self._clock() - self.down_since,
            )
            self.down_since = None

    def failed(self, error: BaseException) -> CacheUnavailable:
        self._trial_running = False
        now = self._clock()
        if self.down_since is None:
            self.down_since = now
            logger.warning(
                "redis is unreachable (%s); degraded until it answers: rate limits count per "
                "process, subscriptions get no events, the deny list is unread",
                str(error) or type(error).__name__,
            )
        self._next_trial = now + self.retry_interval
        return CacheUnavailable(self.retry_interval, now - self.down_since)

    def abandoned(self) -> None:
        """The trial call was cancelled before it could tell: let another one try."""
        self._trial_running = False

    @property
    def outage(self) -> float | None:
        return None if self.down_since is None else self._clock() - self.down_since

    async def until_trial(self) -> None:
        """Sleep until a trial may dial Redis (at once when the breaker is closed)."""
        if self.down_since is not None:
            await asyncio.sleep(max(0.05, self._next_trial - self._clock()))


class _PubSubMessages:
    """Iterator over one Redis pub/sub connection (one connection per subscription).

    When the connection breaks (Redis restarted), it subscribes again once the breaker lets
    it, and goes on: the subscriber stays, the events published meanwhile are lost."""

    def __init__(self, pubsub: PubSub, channel: str, breaker: CircuitBreaker) -> None:
        self._pubsub = pubsub
        self._channel = channel
        self._breaker = breaker
        self._closed = False
        self._subscribed = False

    def __aiter__(self) -> _PubSubMessages:
        return self

    async def subscribe(self) -> None:
        """SUBSCRIBE, and wait for the server's confirmation: it is what guarantees that a
        publish made after this returns reaches us."""
        self._breaker.before_call()
        try:
            await self._pubsub.subscribe(self._channel)
            while (confirmation := await self._pubsub.get_message(timeout=None)) is None or (
                confirmation["type"] != "subscribe"
            ):
                pass
        except _OUTAGE as error:
            raise self._breaker.failed(error) from None
        except BaseException:
            self._breaker.abandoned()
            raise
        self._breaker.succeeded()
        self._subscribed = True

    async def __anext__(self) -> str:
        while not self._closed:
            try:
                if not self._subscribed:
                    await self.subscribe()
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            except CacheUnavailable:
                await self._breaker.until_trial()
                continue
            except _OUTAGE as error:
                if self._closed:  # aclose() cut the connection under a waiting reader
                    break
                self._breaker.failed(error)
                self._subscribed = False
                await self._breaker.until_trial()
                continue
            if message is not None and message["type"] == "message":
                return message["data"]
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed = True
        await self._pubsub.aclose()


class RedisCache(Cache):
    """Cache shared by all API processes through Redis, behind a circuit breaker.

    Every key and channel is prefixed with `prefix`, so several deployments (or test runs) can
    share one server.

    Commands use a blocking pool of `max_connections`: a burst of requests waits for a free
    connection instead of failing with "Too many connections" (redis-py's default pool caps at
    100 and raises). Each subscription holds its own connection for as long as it lasts, so
    subscriptions get a separate pool of `max_subscriptions`: many open GraphQL subscriptions
    then cannot starve rate limiting and token checks of connections. Commands are not
    retried by redis-py: the breaker decides when Redis is tried again.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "qudao:",
        *,
        max_connections: int = 50,
        max_subscriptions: int = 1000,
        retry_interval: float = 1.0,
    ) -> None:
        self.prefix = prefix
        self.breaker = CircuitBreaker(retry_interval)
        no_retry = Retry(NoBackoff(), 0)
        self._client = redis.Redis.from_pool(
            redis.BlockingConnectionPool.from_url(
                url,
                decode_responses=True,
                max_connections=max_connections,
                timeout=_COMMAND_TIMEOUT,  # waiting for a free connection
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=_COMMAND_TIMEOUT,
                retry=no_retry,
            )
        )
        # No socket timeout here: a subscriber waits for messages as long as it takes.
        self._pubsub_client = redis.Redis.from_url(
            url,
            decode_responses=True,
            max_connections=max_subscriptions,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            retry=no_retry,
        )
        self._hit = self._client.register_script(_HIT_SCRIPT)
        self._subscriptions: set[_PubSubMessages] = set()
        # Counters while Redis is away: rate limits and lockouts hold per process meanwhile.
        self._local = InProcessCache()

    async def _call(self, command: Awaitable[T]) -> T:
        try:
            self.breaker.before_call()
        except CacheUnavailable:
            if inspect.iscoroutine(command):
                command.close()  # never awaited: say so, or Python warns
            raise
        try:
            result = await command
        except _OUTAGE as error:
            raise self.breaker.failed(error) from None
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        return result

    @property
    def outage(self) -> float | None:
        return self.breaker.outage

    async def get(self, key: str) -> str | None:
        # The client decodes (decode_responses=True): redis answers text, never bytes.
        text = cast("Awaitable[str | None]", self._client.get(self.prefix + key))
        return await self._call(text)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        px = None if ttl is None else _ms(_positive(ttl, "ttl"))
        await self._call(self._client.set(self.prefix + key, value, px=px))

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete(self.prefix + key))

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        _positive(window, "window")
        try:
            count, ttl_ms = await self._call(
                self._hit(keys=[self.prefix + key], args=[_ms(window)])
            )
        except CacheUnavailable:
            return await self._local.hit(key, window)
        return int(count), int(ttl_ms) / 1000

    async def set_add(self, key: str, member: str, ttl: float | None = None) -> None:
        name = self.prefix + key
        if ttl is None:
            await self._call(self._client.sadd(name, member))
            return
        pexpire = _ms(_positive(ttl, "ttl"))

        async def add_with_expiry() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.sadd(name, member)
                pipe.pexpire(name, pexpire)
                await pipe.execute()

        await self._call(add_with_expiry())

    async def set_contains(self, key: str, member: str) -> bool:
        return bool(await self._call(self._client.sismember(self.prefix + key, member)))

    async def set_remove(self, key: str, member: str) -> None:
        await self._call(self._client.srem(self.prefix + key, member))

    async def publish(self, channel: str, message: str) -> None:
        await self._call(self._client.publish(self.prefix + channel, message))

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        messages = _PubSubMessages(
            self._pubsub_client.pubsub(), self.prefix + channel, self.breaker
        )
        self._subscriptions.add(messages)
        try:
            # Subscribed now when Redis answers; during an outage the iterator subscribes
            # when it comes back (events published meanwhile are lost either way).
            with contextlib.suppress(CacheUnavailable):
                await messages.subscribe()
            yield messages
        finally:
            self._subscriptions.discard(messages)
            await messages.aclose()

    async def ping(self) -> bool:
        # A probe dials even while the breaker is open (it is one call, on a timer): its
        # answer is what readiness reports, and a success ends the outage at once.
        try:
            async with asyncio.timeout(_PING_TIMEOUT):
                answered = bool(await self._client.ping())
        except Exception as exc:  # a probe reports, it does not crash the caller
            if isinstance(exc, _OUTAGE):
                self.breaker.failed(exc)
            else:
                logger.warning("redis ping failed: %r", exc)
            return False
        self.breaker.succeeded()
        return answered

    async def close(self) -> None:
        for messages in list(self._subscriptions):
            await messages.aclose()
        await self._pubsub_client.aclose()
        await self._client.aclose()
        await self._local.close()


def create_cache(
    redis_url: str | None, prefix: str = "qudao:", *, retry_interval: float = 1.0
) -> Cache:
    """Redis when configured (several processes share state), else an in-process cache."""
    if redis_url:
        return RedisCache(redis_url, prefix, retry_interval=retry_interval)
    return InProcessCache()
