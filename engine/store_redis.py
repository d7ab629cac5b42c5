"""Redis state store (redis-py asyncio) for ``emguard serve``.

Layout, all under one namespace ``{ns}`` (default ``emguard``):

| key | type | holds |
|---|---|---|
| ``{ns}:snapshot`` | string | the engine's state snapshot after the last committed batch |
| ``{ns}:outbox`` | hash id → JSON | messages committed but not yet acknowledged by the broker |
| ``{ns}:outbox:seq`` | string (counter) | last outbox id handed out |
| ``{ns}:alert:{alert_id}`` | string JSON | the alert's wire form plus its full history (audit) |

A commit is one MULTI/EXEC transaction (snapshot, outbox entries, alert
records), so a crash never leaves a snapshot without the messages it implies.
The snapshot holds positions of protected persons only for the engine's
retention (``RuleConfig.victim_retention_s``): the engine forgets older points
before every snapshot, so Redis never keeps them longer.  Run Redis with AOF
(``appendonly yes``, see deploy/) so an acknowledged commit survives a Redis
restart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.alerts import Alert
from engine.messages import Outgoing
from engine.store import StoreUnavailable, alert_record, decode_message, encode_message


class RedisStore:
    """``StateStore`` on Redis; every Redis failure surfaces as ``StoreUnavailable``."""

    def __init__(self, url: str, namespace: str = "emguard") -> None:
        self.url = url
        self.ns = namespace
        self.redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def load_snapshot(self) -> bytes | None:
        try:
            value = await self.redis.get(f"{self.ns}:snapshot")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def commit(
        self, snapshot: bytes, messages: Sequence[Outgoing], alerts: Sequence[Alert]
    ) -> list[int]:
        try:
            ids: list[int] = []
            if messages:
                last = int(await self.redis.incrby(f"{self.ns}:outbox:seq", len(messages)))
                ids = list(range(last - len(messages) + 1, last + 1))
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self.ns}:snapshot", snapshot)
                if messages:
                    pipe.hset(
                        f"{self.ns}:outbox",
                        mapping={str(i): encode_message(m) for i, m in zip(ids, messages, strict=True)},
                    )
                for a in alerts:
                    pipe.set(f"{self.ns}:alert:{a.alert_id}", json.dumps(alert_record(a)))
                await pipe.execute()
            return ids
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def pending(self) -> list[tuple[int, Outgoing]]:
        try:
            raw = await self.redis.hgetall(f"{self.ns}:outbox")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        return sorted(((int(k), decode_message(v)) for k, v in raw.items()), key=lambda e: e[0])

    async def published(self, outbox_id: int) -> None:
        try:
            await self.redis.hdel(f"{self.ns}:outbox", str(outbox_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def alert(self, alert_id: str) -> dict[str, Any] | None:
        try:
            value = await self.redis.get(f"{self.ns}:alert:{alert_id}")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        return json.loads(value) if value else None

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()
