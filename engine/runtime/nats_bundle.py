"""Bundles: many device messages of one partition carried by one ``EM_PART`` message.

Why: a NATS message costs the Python client about the same whatever it carries (a protocol
line parsed, a ``Msg`` built, a task woken, an acknowledgement sent back), and one per fix
made the worker spend most of its CPU on the transport (benchmarks/README.md, "Ingest over
the NATS scale-out").  So the intake gathers what it routes to a partition for a few
milliseconds (``FLUSH_S``) and publishes it as one message: the worker pulls, acknowledges and
commits per bundle, and its CPU goes to the engine.

What this changes about exactly-once: JetStream's duplicate window now sees bundles, not
device messages.  A bundle published again (a retry after a lost PubAck) has the same id and
is stored once.  But the two intake paths (engine.runtime.nats_intake) and several replicas
can put the *same* device message into *different* bundles: every entry therefore carries
its message key (a hash of subject and payload), the ``Bundler`` of a replica sends a key once
(both paths of one replica share it), and the worker drops an entry whose key it evaluated in
the last ``RecentKeys`` span before decoding it; beyond that span the engine's stored
(device, seq) memory drops a repeat, as it does for a device's own resend.  Operator actions
(``em/ack``) are not bundled: each keeps its own ``Nats-Msg-Id`` (their repeat would act twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

log = logging.getLogger(__name__)

BUNDLE_HEADER = "Em-Bundle"  # its value: the bundle format's version
BUNDLE_VERSION = "1"
FLUSH_S = 0.02  # the longest a routed message waits for company (fix-to-alert budget: 250 ms);
# shorter made the bundles of a steady 5,000 msg/s over 16 partitions ~1.5 messages each
MAX_ENTRIES = 256  # per bundle: bounds the worker's batch and a bundle's size
MAX_BYTES = 512 * 1024  # below NATS's default max_payload (1 MiB)
MAX_WAITING = 65_536  # entries gathered or in flight; beyond, optional ones are refused
RETRY_MAX_S = 1.0


class Entry(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One device message as the intake routed it: its key, MQTT topic, payload, arrival."""

    key: bytes
    topic: str
    payload: bytes
    arrival: float


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Entry])


def message_key(subject: str, payload: bytes) -> bytes:
    """A device message's identity across paths and replicas: 16 bytes of its hash."""
    return hashlib.blake2b(subject.encode() + b"\0" + payload, digest_size=16).digest()


def encode_bundle(entries: list[Entry]) -> bytes:
    return _encoder.encode(entries)


def decode_bundle(data: bytes) -> list[Entry]:
    """The entries of a bundle; ``msgspec.ValidationError``/``DecodeError`` if it is not one."""
    return _decoder.decode(data)


def bundle_id(entries: list[Entry]) -> str:
    """``Nats-Msg-Id`` of a bundle: the same entries always give the same id (a retry is stored once)."""
    return "bd-" + hashlib.blake2b(b"".join(e.key for e in entries), digest_size=16).hexdigest()


class RecentKeys:
    """Keys seen in the last ``keep_s`` seconds, at most ``limit`` of them (oldest forgotten first)."""

    def __init__(self, keep_s: float, limit: int) -> None:
        self.keep_s = keep_s
        self.limit = limit
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: bytes) -> bool:
        return key in self._seen

    def add(self, key: bytes, now: float) -> None:
        seen = self._seen
        seen[key] = now
        horizon = now - self.keep_s
        while seen and (len(seen) > self.limit or next(iter(seen.values())) < horizon):
            seen.popitem(last=False)


#: publish(partition, bundle bytes, bundle id); raises while the stream does not store it
Publish = Callable[[int, bytes, str], Awaitable[None]]


@dataclass(slots=True)
class _Gathering:
    entries: list[Entry] = field(default_factory=list)
    futures: list[asyncio.Future[None]] = field(default_factory=list)
    size: int = 0


class Bundler:
    """Gathers routed messages per partition and publishes each partition's as one bundle.

    ``add`` answers a future that completes once the entry is stored in ``EM_PART``: the
    intake's stream path acknowledges its source only then.  A key already gathered, in flight
    or stored within ``keep_s`` gets that copy's future, so one replica sends a message once
    whichever path brought it first.  Publishes are retried until stored (the stream may be
    electing a leader) or until ``run`` stops, which cancels what was not stored.
    """

    def __init__(self, publish: Publish, *, flush_s: float = FLUSH_S, max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_BYTES, max_waiting: int = MAX_WAITING, keep_s: float = 30.0) -> None:
        self.publish = publish
        self.flush_s = flush_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_waiting = max_waiting
        self.stored = RecentKeys(keep_s, 4 * max_waiting)
        self.bundles = 0  # bundles stored
        self.entries = 0  # entries stored
        self.repeats = 0  # adds answered with an earlier copy's future
        self._gathering: dict[int, _Gathering] = {}
        self._waiting: dict[bytes, asyncio.Future[None]] = {}  # gathered or in flight
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, partition: int, entry: Entry, *, optional: bool = False) -> asyncio.Future[None] | None:
        """Gather ``entry`` for ``partition``; None if ``optional`` and too much is waiting."""
        earlier = self._waiting.get(entry.key)
        if earlier is not None:
            self.repeats += 1
            return earlier
        if entry.key in self.stored:
            self.repeats += 1
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
                self._done.set_result(None)
            return self._done
        if optional and len(self._waiting) >= self.max_waiting:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        g = self._gathering.get(partition)
        if g is None:
            g = self._gathering[partition] = _Gathering()
        g.entries.append(entry)
        g.futures.append(future)
        g.size += len(entry.payload) + len(entry.topic) + 32
        self._waiting[entry.key] = future
        if len(g.entries) >= self.max_entries or g.size >= self.max_bytes:
            self._send(partition)
        self._wake.set()
        return future

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every partition's gathering ``flush_s`` after its first entry, until ``stop``."""
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                if not self._gathering:
                    self._wake.clear()
                    continue
                await asyncio.sleep(self.flush_s)
                self._wake.clear()
                for n in list(self._gathering):
                    self._send(n)
        finally:
            for task in list(self._in_flight):
                task.cancel()
            for future in self._waiting.values():
                future.cancel()
            self._waiting.clear()
            self._gathering.clear()

    def _send(self, partition: int) -> None:
        g = self._gathering.pop(partition, None)
        if g is None or not g.entries:
            return
        task = asyncio.create_task(self._until_stored(partition, g))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _until_stored(self, partition: int, g: _Gathering) -> None:
        data, ident = encode_bundle(g.entries), bundle_id(g.entries)
        backoff = 0.05
        while True:
            try:
                await self.publish(partition, data, ident)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream may be electing a leader: retry
                log.info("bundle for partition %d not stored yet (%r); retrying", partition, exc)
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, RETRY_MAX_S)
        now = time.monotonic()
        for entry, future in zip(g.entries, g.futures, strict=True):
            self._waiting.pop(entry.key, None)
            self.stored.add(entry.key, now)
            if not future.done():
                future.set_result(None)
        self.bundles += 1
        self.entries += len(g.entries)
