"""Result caches keyed by the content hash of the image bytes.

Values are our own MessagePack records (label indices and scores), never pickles. A
Redis outage degrades to serving uncached: calls fail fast, the cache stays off for a
short back-off, and the outage is counted and reported by ``/healthz``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from urllib.parse import urlsplit, urlunsplit
from typing import Protocol

import msgpack

log = logging.getLogger("samples.sample_server.cache")
REDIS_BACKOFF_S = 5.0
REDIS_TIMEOUT_S = 0.25


class ResultCache(Protocol):
    kind: str

    async def get(self, key: str) -> dict | None: ...

    async def put(self, key: str, value: dict) -> None: ...

    def status(self) -> dict: ...

    async def close(self) -> None: ...


class NoCache:
    kind = "off"

    async def get(self, key: str) -> dict | None:
        return None

    async def put(self, key: str, value: dict) -> None:
        return None

    def status(self) -> dict:
        return {"kind": self.kind}

    async def close(self) -> None:
        return None


class LruCache:
    """In-process LRU; only the event-loop thread touches it, so it needs no lock."""

    kind = "lru"

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._entries: OrderedDict[str, dict] = OrderedDict()

    async def get(self, key: str) -> dict | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: dict) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def status(self) -> dict:
        return {"kind": self.kind, "entries": len(self._entries), "capacity": self.capacity}

    async def close(self) -> None:
        self._entries.clear()


def redact_url(url: str) -> str:
    """The URL without its password, fit for logs and /healthz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisCache:
    kind = "redis"

    def __init__(self, url: str, ttl_s: int = 3600) -> None:
        import redis.asyncio as redis_asyncio

        self.url = redact_url(url)
        self.ttl_s = ttl_s
        self._client = redis_asyncio.Redis.from_url(
            url,  # the real URL, password included; only the redacted one is shown socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S, retry_on_timeout=False
        )
        self._down_until = 0.0
        self.errors = 0
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._down_until

    async def ping(self) -> bool:
        try:
            await self._client.ping()
        except Exception as exc:  # redis raises ConnectionError, TimeoutError, OSError...
            self._mark_down(exc)
            return False
        return True

    async def get(self, key: str) -> dict | None:
        if not self.healthy:
            return None
        try:
            raw = await self._client.get(key)
        except Exception as exc:
            self._mark_down(exc)
            return None
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    async def put(self, key: str, value: dict) -> None:
        if not self.healthy:
            return
        try:
            await self._client.set(key, msgpack.packb(value), ex=self.ttl_s)
        except Exception as exc:
            self._mark_down(exc)

    def _mark_down(self, exc: Exception) -> None:
        was_healthy = self.healthy
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._down_until = time.monotonic() + REDIS_BACKOFF_S
        if was_healthy:
            log.warning("redis cache at %s unreachable (%s): serving uncached, retrying in %.0f s",
                        self.url, self.last_error, REDIS_BACKOFF_S)

    def status(self) -> dict:
        return {"kind": self.kind, "url": self.url, "healthy": self.healthy, "errors": self.errors,
                "last_error": self.last_error}

    async def close(self) -> None:
        await self._client.aclose()


def make_cache(spec: str, capacity: int) -> ResultCache:
    if spec == "off":
        return NoCache()
    if spec == "lru":
        return LruCache(capacity)
    return RedisCache(spec)
