"""Bundles of the NATS scale-out (engine.runtime.nats_bundle): format, repeats, limits, retries."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from engine.runtime.nats_bundle import (
    Bundler,
    Entry,
    RecentKeys,
    bundle_id,
    decode_bundle,
    encode_bundle,
    message_key,
)


def _entry(i: int, size: int = 10) -> Entry:
    payload = b"%d:" % i + b"x" * size
    return Entry(message_key(f"em.dev.AM-{i}.fix", payload), f"em/dev/AM-{i}/fix", payload, 1.5 + i)


class _Stream:
    """Records published bundles; the first ``failures`` publishes raise like a stream without leader."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.bundles: list[tuple[int, list[Entry], str]] = []

    async def publish(self, partition: int, data: bytes, ident: str) -> None:
        if self.failures:
            self.failures -= 1
            raise TimeoutError("no leader")
        self.bundles.append((partition, decode_bundle(data), ident))


def test_a_bundle_round_trips_and_its_id_names_its_entries():
    entries = [_entry(i) for i in range(3)]
    assert decode_bundle(encode_bundle(entries)) == entries
    assert bundle_id(entries) == bundle_id([_entry(i) for i in range(3)])
    assert bundle_id(entries) != bundle_id(entries[:2])
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_bundle(b'{"device": "AM-1"}')


def test_recent_keys_forget_by_age_and_by_count():
    recent = RecentKeys(keep_s=10, limit=3)
    for i, key in enumerate((b"a", b"b", b"c")):
        recent.add(key, float(i))
    assert b"a" in recent and len(recent) == 3
    recent.add(b"d", 3.0)  # over the limit: the oldest goes
    assert b"a" not in recent and len(recent) == 3
    recent.add(b"e", 12.5)  # b (1.0) and c (2.0) are older than 12.5 - 10
    assert b"b" not in recent and b"c" not in recent and b"d" in recent


async def test_one_partition_s_messages_leave_as_one_bundle_per_flush():
    stream = _Stream()
    bundler = Bundler(stream.publish, flush_s=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(bundler.run(stop))
    futures = [bundler.add(i % 2, _entry(i)) for i in range(10)]
    await asyncio.wait_for(asyncio.gather(*futures), 5)  # type: ignore[arg-type]
    stop.set()
    await running
    assert sorted((n, len(entries)) for n, entries, _ in stream.bundles) == [(0, 5), (1, 5)]
    assert bundler.entries == 10 and bundler.bundles == 2


async def test_a_full_bundle_leaves_at_once_and_a_repeat_rides_with_the_first_copy():
    stream = _Stream()
    bundler = Bundler(stream.publish, flush_s=60, max_entries=4)
    stop = asyncio.Event()
    running = asyncio.create_task(bundler.run(stop))
    first = [bundler.add(3, _entry(i)) for i in range(4)]  # full: sent without the 60 s wait
    repeat = bundler.add(3, _entry(0))
    assert repeat is first[0]
    await asyncio.wait_for(asyncio.gather(*first), 5)  # type: ignore[arg-type]
    later = bundler.add(3, _entry(1))  # stored already: nothing new is sent
    assert later is not None and later.done()
    stop.set()
    await running
    assert [len(entries) for _, entries, _ in stream.bundles] == [4]
    assert bundler.repeats == 2


async def test_a_bundle_is_retried_until_stored_under_the_same_id():
    stream = _Stream(failures=2)
    bundler = Bundler(stream.publish, flush_s=0.001)
    stop = asyncio.Event()
    running = asyncio.create_task(bundler.run(stop))
    future = bundler.add(0, _entry(7))
    await asyncio.wait_for(future, 5)  # type: ignore[arg-type]
    stop.set()
    await running
    assert len(stream.bundles) == 1 and stream.failures == 0


async def test_optional_copies_are_refused_when_too_much_waits_and_stop_cancels_the_rest():
    stream = _Stream(failures=10**6)  # never stored
    bundler = Bundler(stream.publish, flush_s=0.001, max_waiting=3)
    stop = asyncio.Event()
    running = asyncio.create_task(bundler.run(stop))
    kept = [bundler.add(0, _entry(i), optional=True) for i in range(3)]
    assert bundler.add(0, _entry(9), optional=True) is None  # the stream path still has it
    required = bundler.add(0, _entry(10))  # the stream path's own copy is never refused
    assert required is not None and bundler.waiting == 4
    await asyncio.sleep(0.05)
    stop.set()
    await running
    assert all(f is not None and f.cancelled() for f in (*kept, required))
    assert stream.bundles == []
