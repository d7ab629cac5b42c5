"""Case state of the NATS workers in one shared Redis keyspace, fenced per partition.

Layout under ``{ns}`` (default ``emguard``), for partition ``n``:

| key | type | holds |
|---|---|---|
| ``{ns}:part:{n}:epoch`` | string (counter) | the fencing token: raised by every takeover |
| ``{ns}:part:{n}:state`` | hash case → bytes | the state part of each case of the partition |
| ``{ns}:part:{n}:outbox`` | hash id → JSON | alert traffic committed but not yet stored by JetStream |
| ``{ns}:part:{n}:outbox:seq`` | string (counter) | last outbox id handed out |
| ``{ns}:alert:{alert_id}`` | string JSON | the alert with its history (``engine.runtime.store_redis`` reads it) |

A worker that takes a partition over first ``claim``s it: an atomic INCR of the epoch gives
it a token no earlier owner has.  Every commit runs as one Lua script that applies the state
delta, queues the outbox entries and archives the alerts only if the epoch still equals the
committer's token.  An owner that was paused (SIGSTOP, a long GC, a partitioned network)
while its lease lapsed and another worker claimed the partition therefore cannot overwrite
the new owner's state: its commit is refused (``Fenced``) and it drops the partition without
acknowledging anything, so JetStream redelivers those messages to the new owner.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.core.alert_records import Alert
from engine.core.effects import StateDelta
from engine.core.messages import Outgoing
from engine.redact import redact_url
from engine.runtime.store import StoreUnavailable, alert_record, decode_message, encode_message

# KEYS: epoch, state, outbox, outbox seq, alert record keys...
# ARGV: token, replace_all, n_set, (case, part)*, n_del, case*, n_msg, msg*, alert json* (one per alert key)
_COMMIT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return -1 end
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HDEL', KEYS[2], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
local first = 0
if n > 0 then first = redis.call('INCRBY', KEYS[4], n) - n + 1 end
for j = 0, n - 1 do redis.call('HSET', KEYS[3], tostring(first + j), ARGV[i]); i = i + 1 end
for k = 5, #KEYS do redis.call('SET', KEYS[k], ARGV[i]); i = i + 1 end
return first
"""


class Fenced(Exception):
    """A newer owner claimed the partition: this worker's commit was refused."""


#: one partition's commit: partition, fencing token, state delta, outbox messages, alerts to archive
Commit = tuple[int, int, StateDelta, Sequence[Outgoing], Sequence[Alert]]


class PartitionStore:
    """Fenced per-partition state, outbox and alert archive on Redis."""

    def __init__(self, url: str, namespace: str = "emguard") -> None:
        self.url = redact_url(url)
        self.ns = namespace
        self.redis = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._commit = self.redis.register_script(_COMMIT)

    def _key(self, n: int, what: str) -> str:
        return f"{self.ns}:part:{n}:{what}"

    async def claim(self, n: int) -> int:
        """Take partition ``n`` over: a fencing token greater than every earlier owner's."""
        try:
            return int(await self.redis.incr(self._key(n, "epoch")))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def epoch(self, n: int) -> int:
        try:
            return int(await self.redis.get(self._key(n, "epoch")) or 0)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def load(self, n: int) -> tuple[list[bytes], list[tuple[int, Outgoing]]]:
        """The partition's stored case parts and its unpublished outbox entries (oldest first)."""
        try:
            parts = await self.redis.hgetall(self._key(n, "state"))
            outbox = await self.redis.hgetall(self._key(n, "outbox"))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        pending = sorted(((int(k), decode_message(v)) for k, v in outbox.items()), key=lambda e: e[0])
        return [_bytes(parts[k]) for k in sorted(parts)], pending

    def _script_call(self, n: int, token: int, delta: StateDelta, messages: Sequence[Outgoing],
                     alerts: Sequence[Alert]) -> tuple[list[str], list[str | bytes | int]]:
        stored = [(c, p) for c, p in delta.parts.items() if p is not None]
        gone = [c for c, p in delta.parts.items() if p is None and not delta.replace_all]
        argv: list[str | bytes | int] = [token, "1" if delta.replace_all else "0", len(stored)]
        for case, part in stored:
            argv += [case, part]
        argv += [len(gone), *gone, len(messages), *(encode_message(m) for m in messages)]
        argv += [json.dumps(alert_record(a)) for a in alerts]
        keys = [self._key(n, "epoch"), self._key(n, "state"), self._key(n, "outbox"), self._key(n, "outbox:seq")]
        keys += [f"{self.ns}:alert:{a.alert_id}" for a in alerts]
        return keys, argv

    async def commit(
        self, n: int, token: int, delta: StateDelta, messages: Sequence[Outgoing], alerts: Sequence[Alert]
    ) -> list[int]:
        """Apply the delta, queue the messages and archive the alerts, if ``token`` is current.

        Returns the outbox ids of ``messages``; raises ``Fenced`` when a newer owner claimed
        the partition (nothing is written then).  ``commit_many`` for one partition.
        """
        (outcome,) = await self.commit_many([(n, token, delta, messages, alerts)])
        if isinstance(outcome, Fenced):
            raise outcome
        return outcome

    async def commit_many(self, commits: Sequence[Commit]) -> list[list[int] | Fenced]:
        """``commit`` for several partitions in one round trip (a pipeline, not a transaction:
        each partition's script is atomic and fenced on its own, so one partition refused
        leaves the others committed).  Per partition its outbox ids, or the ``Fenced`` refusal."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for n, token, delta, messages, alerts in commits:
                    keys, argv = self._script_call(n, token, delta, messages, alerts)
                    await self._commit(keys=keys, args=argv, client=pipe)
                firsts = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc
        return [Fenced(f"partition {n}: token {token} is no longer current") if int(first) < 0
                else list(range(int(first), int(first) + len(messages)))
                for (n, token, _, messages, _), first in zip(commits, firsts, strict=True)]

    async def replicated(self, replicas: int, timeout_s: float) -> bool:
        """Whether ``replicas`` Redis replicas hold every write made so far (``WAIT``).

        Asked after a commit and before its messages are acknowledged, so that a Redis failover
        to a replica cannot lose a commit whose messages JetStream will not redeliver.
        """
        try:
            return int(await self.redis.wait(replicas, int(timeout_s * 1000))) >= replicas
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def published(self, n: int, outbox_ids: Sequence[int]) -> None:
        """JetStream stored these outbox entries (a stale owner deleting them is harmless)."""
        await self.published_many([(n, outbox_ids)])

    async def published_many(self, done: Sequence[tuple[int, Sequence[int]]]) -> None:
        """``published`` for several partitions in one round trip."""
        done = [(n, ids) for n, ids in done if ids]
        if not done:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for n, outbox_ids in done:
                    pipe.hdel(self._key(n, "outbox"), *map(str, outbox_ids))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis {self.url}: {exc}") from exc

    async def close(self) -> None:
        await self.redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
