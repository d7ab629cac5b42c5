"""Indexes the engine keeps over its own state, so a tick costs what is due, not the caseload.

Each index is rebuilt from the state when it no longer matches it: it remembers the very
containers (and rule set or order book) it was built over, and ``valid_for`` says whether they
are still the engine's (a restore or an order change replaces them).

* ``DueIndex``: reorder buffers' due times as a heap (``Engine.release_due``);
* ``SilenceIndex``: when each device falls silent (``Engine.tick``);
* ``VictimFloor``: a lower bound of the protected persons' oldest track point, so the privacy
  pass that forgets her old positions is skipped while nothing is old enough.
"""

from __future__ import annotations

import math
from heapq import heapify, heappop, heappush

from engine.core.config import RuleConfig
from engine.core.orders import OrderBook
from engine.core.tracks import DeviceTrack


class DueIndex:
    """Due times of the tracks with buffered fixes, as a heap of (lower bound, device)."""

    def __init__(self, tracks: dict[str, DeviceTrack], rules: RuleConfig) -> None:
        self.tracks = tracks
        self.rules = rules
        self.heap = [(due_key(t, rules), d) for d, t in tracks.items() if t.pending]
        heapify(self.heap)

    def valid_for(self, tracks: dict[str, DeviceTrack], rules: RuleConfig) -> bool:
        """Built over these tracks and rules."""
        return self.tracks is tracks and self.rules is rules

    def add(self, track: DeviceTrack) -> None:
        """A fix was buffered: its track's due time may have moved."""
        heappush(self.heap, (due_key(track, self.rules), track.device))


class VictimFloor:
    """A lower bound of the protected persons' oldest track point (``inf``: none)."""

    def __init__(self, tracks: dict[str, DeviceTrack], book: OrderBook, oldest: float) -> None:
        self.tracks = tracks
        self.book = book
        self.oldest = oldest

    def valid_for(self, tracks: dict[str, DeviceTrack], book: OrderBook) -> bool:
        """Built over these tracks and this order book."""
        return self.tracks is tracks and self.book is book


class SilenceIndex:
    """Which tracks ``tick`` must declare silent, without looking at every track each tick.

    A track falls silent when it was heard from (``last_arrival`` set) more than its limit
    (``silent_after_s`` or the default) ago and is not in ``silent`` yet.  The heap holds, for
    every such candidate, an entry whose key is at most its silence time; ``last_arrival``
    only grows, so an entry stays a lower bound, and a popped entry that is not due yet is
    pushed back with the track's current key.  A track gets an entry when it is created and
    when it leaves ``silent``.  A replaced ``tracks``, ``silent`` or ``silent_after_s`` (restore),
    another default, or a track added without ``Engine._track`` rebuilds the heap.  Limits
    are read when an entry is pushed: change them by assigning a new dict, not in place.
    """

    __slots__ = ("default", "heap", "limits", "silent", "size", "tracks")

    def __init__(
        self, tracks: dict[str, DeviceTrack], silent: set[str], limits: dict[str, float], default: float
    ) -> None:
        self.tracks = tracks
        self.silent = silent
        self.limits = limits
        self.default = default
        self.size = len(tracks)
        self.heap = [(self.key(t), d) for d, t in self.tracks.items() if d not in self.silent]
        heapify(self.heap)

    def valid_for(
        self, tracks: dict[str, DeviceTrack], silent: set[str], limits: dict[str, float], default: float
    ) -> bool:
        """Built over these very containers and limit, and no track added behind its back."""
        return (
            self.tracks is tracks
            and self.silent is silent
            and self.limits is limits
            and self.default == default
            and self.size == len(tracks)
        )

    def key(self, track: DeviceTrack) -> float:
        """A lower bound (by 1 µs, for rounding) of the processing time the track falls silent."""
        return track.last_arrival + self.limits.get(track.device, self.default) - 1e-6

    def add(self, track: DeviceTrack) -> None:
        heappush(self.heap, (self.key(track), track.device))

    def due(self, now: float) -> list[DeviceTrack]:
        heap = self.heap
        found: dict[str, DeviceTrack] = {}
        retry: dict[str, float] = {}
        while heap and heap[0][0] <= now:
            _, device = heappop(heap)
            track = self.tracks.get(device)
            if track is None or device in self.silent or device in found or device in retry:
                continue  # an entry is pushed again when it is created / heard from
            limit = self.limits.get(device, self.default)
            if track.last_arrival > -math.inf and now - track.last_arrival > limit:
                found[device] = track
            else:
                retry[device] = self.key(track)
        for device, key in retry.items():
            heappush(heap, (key, device))
        return [found[d] for d in sorted(found)]


def due_key(track: DeviceTrack, rules: RuleConfig) -> float:
    """A lower bound (by 1 µs, for rounding) of the processing time at which ``track.due`` holds."""
    if track.in_sequence(rules):
        return -math.inf
    if track.waits_for_late(rules):
        return min(
            track.last_pending_arrival + rules.late_quiet_s,
            track.first_pending_arrival + rules.late_max_hold_s,
        ) - 1e-6
    return min(
        track.last_pending_arrival + rules.reorder_quiet_s,
        track.first_pending_arrival + rules.reorder_max_hold_s,
    ) - 1e-6
