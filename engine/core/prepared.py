"""A micro-batch decoded and projected ahead (``Engine.prepare``), taken message by message.

The service hands the engine a batch before handling its messages one at a time: decoding them
together and projecting all their fixes in one pyproj call on arrays gives each point the same
numbers as a call per point, at a third of the cost per point.  ``Engine.handle`` then takes each
message's decoding, and each released fix its position, from here; anything not found is
decoded or projected on the spot, so this is only ever a shortcut.

Entries are keyed by the identity of the payload or fix object and checked with ``is`` before
use, so an id recycled by a later object never matches it; an entry is gone once taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from devices.decode import Decoded
from devices.model import Fix
from geo.projection import Projector

# projected fixes kept for fixes not yet evaluated (a device's first fixes wait in its reorder
# buffer): above this many they are dropped together, and a fix whose position went is projected
# on its own (the same numbers)
POSITIONS_KEPT = 8192


class PreparedBatch:
    """Decodings by payload, positions by fix, of the last prepared micro-batch."""

    def __init__(self) -> None:
        self.decoded: dict[int, tuple[bytes, str, float, Decoded]] = {}  # id(payload) -> ...
        self.positions: dict[int, tuple[Fix, float, float]] = {}  # id(fix) -> (fix, x, y)

    def fill(
        self,
        messages: Iterable[tuple[str, bytes, float]],
        decode: Callable[[str, bytes, float], Decoded],
        projector: Projector,
    ) -> None:
        """Decode ``messages`` (topic, payload, arrival) and project their fixes together."""
        decoded: dict[int, tuple[bytes, str, float, Decoded]] = {}
        lon: list[float] = []
        lat: list[float] = []
        fixes: list[Fix] = []
        for topic, payload, now in messages:
            result = decode(topic, payload, now)
            decoded[id(payload)] = (payload, topic, now, result)
            for fix in result.fixes:
                fixes.append(fix)
                lon.append(fix.lon)
                lat.append(fix.lat)
        self.decoded = decoded
        positions = self.positions if len(self.positions) < POSITIONS_KEPT else {}
        if len(fixes) > 1:
            xs, ys = projector.forward(np.array(lon), np.array(lat))
            for fix, x, y in zip(fixes, xs.tolist(), ys.tolist(), strict=True):
                positions[id(fix)] = (fix, x, y)
        self.positions = positions

    def take_decoded(self, topic: str, payload: bytes, now: float) -> Decoded | None:
        """The decoding of exactly this message, if prepared; forgotten once taken."""
        key = id(payload)
        ahead = self.decoded.get(key)  # get, then del: pop with a default is a generic call compiled
        if ahead is None or ahead[0] is not payload or ahead[1] != topic or ahead[2] != now:
            return None
        del self.decoded[key]  # nothing of a handled message outlives it
        return ahead[3]

    def take_position(self, fix: Fix) -> tuple[float, float] | None:
        """The projected (x, y) of exactly this fix, if prepared; forgotten once taken."""
        positions = self.positions
        if not positions:
            return None
        key = id(fix)
        ahead = positions.get(key)
        if ahead is None or ahead[0] is not fix:
            return None
        del positions[key]
        return ahead[1], ahead[2]

    def forget_decoded(self) -> None:
        """Drop the decodings (they used the old orders' OwnTracks map)."""
        self.decoded = {}
