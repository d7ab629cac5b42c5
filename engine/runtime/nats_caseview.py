"""Device health centre-wide on NATS workers: owners publish it per partition, every worker reads it.

A device's health and latest position are in the engine of the partition owning its case, on
one worker; the centre must see them on whichever worker its browser reaches.  Two tasks:

* ``ViewPublisher`` (a worker that evaluates): every ``view_s`` (``EMGUARD_NATS_VIEW_S``), for
  each partition it owns with a ready engine, the devices' health records (the injected
  ``engine.web.views.devices``, what a single node's ``GET /api/devices`` lists) are encoded into
  one snapshot (``engine.runtime.device_view``) and put into the KV bucket ``em_view`` under the
  partition's key.  A new owner overwrites its predecessor's snapshot at its first period.
* ``DeviceFeed`` (a worker with the centre API): watches ``em_view`` into the ``DeviceView`` the
  API merges.

Why a KV snapshot and not a stream of changes: the reader needs only the latest state, a
bucket keeps exactly that per key (history 1), and a worker started later reads it at once.
A failure of either task is logged and retried; it never stops the worker's evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from engine.runtime.device_view import DeviceHealth, DeviceView, encode_snapshot, view_key
from engine.runtime.nats_jetstream import NatsSettings, device_views, follow_until
from engine.runtime.nats_rounds import Owned

log = logging.getLogger(__name__)
RETRY_S = 1.0


class ViewPublisher:
    """Puts a device-health snapshot of every ready owned partition into ``em_view`` each period."""

    def __init__(self, js: JetStreamContext, settings: NatsSettings, owned: dict[int, Owned],
                 health: DeviceHealth, clock: Callable[[], float] = time.time) -> None:
        self.js = js
        self.settings = settings
        self.owned = owned  # the worker's own map: read only, never changed here
        self.health = health
        self.clock = clock
        self.puts = 0
        self.largest = 0  # bytes of the largest snapshot put so far
        self.last_round_s = 0.0  # CPU seconds the last round spent building snapshots

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a round every ``view_s``; a failed round is retried at the next."""
        kv: KeyValue | None = None
        while not stop.is_set():
            try:
                if kv is None:
                    kv = await device_views(self.js, self.settings)
                await self.publish(kv)
            except Exception as exc:  # e.g. no KV leader for a moment: the next period retries
                log.warning("device view: snapshots not published (%r)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.view_s)

    async def publish(self, kv: KeyValue) -> int:
        """One round: a snapshot per ready owned partition; the number put."""
        built = 0.0
        put = 0
        for n in sorted(self.owned):
            o = self.owned.get(n)
            if o is None or not o.ready or o.engine is None:
                continue  # released meanwhile, or still restoring its state
            started = time.process_time()
            now = self.clock()
            data = encode_snapshot(n, self.settings.worker_id, now, self.health(o.engine, now))
            built += time.process_time() - started
            await kv.put(view_key(n), data)  # also yields: evaluation runs between partitions
            self.largest = max(self.largest, len(data))
            put += 1
        self.puts += put
        self.last_round_s = built
        return put


class DeviceFeed:
    """Watches ``em_view`` into ``view``: every partition's latest snapshot, as it is put."""

    def __init__(self, js: JetStreamContext, settings: NatsSettings, view: DeviceView) -> None:
        self.js = js
        self.settings = settings
        self.view = view
        view.partitions, view.period_s = settings.partitions, settings.view_s

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; a broken watch is started again (it re-reads every key's latest)."""
        await follow_until(stop, self._follow, "device view feed", RETRY_S)

    async def _follow(self, stop: asyncio.Event) -> None:
        kv = await device_views(self.js, self.settings)
        watcher = await kv.watchall()
        try:
            while not stop.is_set():
                entry = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                if entry is None:
                    continue  # the marker after the initial values
                n = _partition(entry.key)
                if n is None:
                    continue
                if entry.operation in ("DEL", "PURGE"):
                    self.view.drop(n)
                elif entry.value and not self.view.take(entry.value):
                    log.warning("device view: the snapshot under %s was not readable", entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]


def _partition(key: str) -> int | None:
    """The partition of a key ``p{n}``; None for anything else."""
    if not key.startswith("p") or not key[1:].isdigit():
        return None
    return int(key[1:])
