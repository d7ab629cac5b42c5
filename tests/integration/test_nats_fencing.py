"""Fencing on a real Redis: a stale partition owner's commit is refused and writes nothing."""

from __future__ import annotations

import pytest

from engine.core.effects import StateDelta
from engine.core.messages import Outgoing
from engine.runtime.nats_store import Fenced, PartitionStore
from tests.integration import procs

pytestmark = pytest.mark.integration


async def test_a_stale_token_cannot_overwrite_the_new_owner(tmp_path):
    """Old owner claims, new owner claims: the new one commits, the old one is Fenced."""
    redis = procs.redis(tmp_path)
    await redis.start()
    url = f"redis://127.0.0.1:{redis.port}/0"
    old, new = PartitionStore(url), PartitionStore(url)
    try:
        t_old = await old.claim(3)
        assert await old.commit(3, t_old, StateDelta({"S:S-1": b"old"}, True), [], []) == []
        t_new = await new.claim(3)
        assert t_new > t_old
        msg = Outgoing("centre", "em/alerts/centre", {"alert_id": "A-1", "change_seq": 1})
        ids = await new.commit(3, t_new, StateDelta({"S:S-1": b"new"}, False), [msg], [])
        with pytest.raises(Fenced):
            await old.commit(3, t_old, StateDelta({"S:S-1": b"stale", "S:S-2": b"x"}, True), [msg], [])
        parts, pending = await new.load(3)
        assert parts == [b"new"]  # the stale replace_all wrote nothing
        assert [i for i, _ in pending] == ids == [1]
        await new.published(3, ids)
        assert (await new.load(3))[1] == []
        assert await new.epoch(3) == t_new and await new.epoch(4) == 0
    finally:
        await old.close()
        await new.close()
        redis.stop()


async def test_acks_can_wait_for_a_redis_replica(tmp_path):
    """WAIT: true once the replica holds the commit, false (after the timeout) once it is gone."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    primary = procs.redis(tmp_path / "a")
    replica = procs.redis(tmp_path / "b")
    primary.argv += ["--repl-diskless-sync-delay", "0"]  # the replica's first sync: now, not in 5 s
    replica.argv += ["--replicaof", "127.0.0.1", str(primary.port)]
    await primary.start()
    await replica.start()
    store = PartitionStore(f"redis://127.0.0.1:{primary.port}/0")
    try:
        token = await store.claim(0)
        await store.commit(0, token, StateDelta({"S:S-1": b"x"}, True), [], [])
        assert await procs_wait(lambda: store.replicated(1, 1.0))  # the replica may still be syncing
        replica.kill()  # the replica is lost (SIGTERM took 15 s here: redis waits on shutdown)
        await store.commit(0, token, StateDelta({"S:S-1": b"y"}, False), [], [])
        assert not await store.replicated(1, 0.3)
    finally:
        await store.close()
        replica.stop()
        primary.stop()


async def procs_wait(check, tries: int = 20) -> bool:
    for _ in range(tries):
        if await check():
            return True
    return False
