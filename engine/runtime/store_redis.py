"""Redis state store (redis-py asyncio) for ``emguard serve``.

Layout, all under one namespace ``{ns}`` (default ``emguard``):

| key | type | holds |
|---|---|---|
| ``{ns}:state`` | hash case → bytes | each case's state part after the last committed batch that changed it (``engine.core.state_schema``) |
| ``{ns}:outbox`` | hash id → JSON | messages committed but not yet acknowledged by the broker |
| ``{ns}:outbox:seq`` | string (counter) | last outbox id handed out |
| ``{ns}:alert:{alert_id}`` | string JSON | the alert's wire form plus its full history (audit) |
| ``{ns}:suspects`` | hash message key → count | messages in flight when the service failed (``engine.runtime.poison``) |

A commit is one MULTI/EXEC transaction (the changed cases' parts, outbox
entries, alert records), so a crash never leaves state without the messages it
implies.  Only the cases a batch touched are written (``engine.core.case_state``),
so a commit costs in proportion to the batch, not to the caseload.  A part is a
versioned MessagePack record (docs/state-schema.md).  A
``{ns}:snapshot`` string left by a version before per-case parts (an old format) is
still returned when there are no parts, so that it is reported as unreadable
rather than silently ignored.  The parts hold positions of protected persons only for the engine's
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

from engine.core.alert_records import Alert
from engine.core.effects import StateDelta
from engine.core.messages import Outgoing
from engine.redact import redact_url
from engine.runtime.store import StoreUnavailable, alert_record, decode_message, encode_message


class RedisStore:
    """``StateStore`` on Redis; every Redis failure surfaces as ``StoreUnavailable``."""

    def __init__(self, url: str, namespace: str = "emguard") -> None:
        self.url = redact_url(url)  # for messages: errors reach logs and /readyz, never the password
        self.ns = namespace
        self.redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def load_state(self) -> list[bytes]:
        try:
            parts = await self.redis.hgetall(f"{self.ns}:state")
            if not parts:
                legacy = await self.redis.get(f"{self.ns}:snapshot")
                return [] if legacy is None else [_bytes(legacy)]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        return [_bytes(parts[k]) for k in sorted(parts)]

    async def commit(
        self, delta: StateDelta, messages: Sequence[Outgoing], alerts: Sequence[Alert]
    ) -> list[int]:
        try:
            ids: list[int] = []
            if messages:
                last = int(await self.redis.incrby(f"{self.ns}:outbox:seq", len(messages)))
                ids = list(range(last - len(messages) + 1, last + 1))
            async with self.redis.pipeline(transaction=True) as pipe:
                key = f"{self.ns}:state"
                if delta.replace_all:
                    pipe.delete(key, f"{self.ns}:snapshot")
                stored = {c: p for c, p in delta.parts.items() if p is not None}
                if stored:
                    pipe.hset(key, mapping=stored)  # type: ignore[arg-type]
                gone = [c for c, p in delta.parts.items() if p is None]
                if gone and not delta.replace_all:
                    pipe.hdel(key, *gone)
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

    async def published(self, outbox_ids: Sequence[int]) -> None:
        if not outbox_ids:
            return
        try:
            await self.redis.hdel(f"{self.ns}:outbox", *map(str, outbox_ids))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def alert(self, alert_id: str) -> dict[str, Any] | None:
        try:
            value = await self.redis.get(f"{self.ns}:alert:{alert_id}")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        return json.loads(value) if value else None

    async def open_alerts(self, batch: int = 500) -> list[dict[str, Any]]:
        """Every archived alert not closed (a NATS worker's centre view starts from these)."""
        out: list[dict[str, Any]] = []
        try:
            keys = [k async for k in self.redis.scan_iter(match=f"{self.ns}:alert:*", count=1000)]
            for i in range(0, len(keys), batch):
                for value in await self.redis.mget(keys[i:i + batch]):
                    record = json.loads(value) if value else None
                    if isinstance(record, dict) and record.get("state") != "closed":
                        out.append(record)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        return out

    async def suspects(self) -> dict[str, int]:
        try:
            raw = await self.redis.hgetall(f"{self.ns}:suspects")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        return {_bytes(k).decode(): int(v) for k, v in raw.items()}

    async def add_suspects(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.hincrby(f"{self.ns}:suspects", key, 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def clear_suspects(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            await self.redis.hdel(f"{self.ns}:suspects", *keys)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
