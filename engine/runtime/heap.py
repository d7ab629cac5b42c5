"""Keeping the cyclic garbage collector's full passes short in a long-running engine.

A full pass walks every container object the collector tracks and stops the event loop
meanwhile.  The engine's heap is mostly long-lived: orders and the zone index (frozen after
loading) and then, growing with traffic, tracks, episodes and alerts.  At 10,000 subjects a
full pass over what had accumulated took 70-85 ms, three times per 120,000 messages, and the
messages that queued behind it made the fix-to-alert latency tail (ingest benchmark).

After every full pass its survivors are frozen (``gc.freeze``), so the next pass walks only
what was made since: a pause in proportion to recent growth, not to the whole state.
Objects freed by reference counting are still freed; what is given up is collecting a
*cycle* of objects that were alive at a full pass and die later.  The engine's state holds
no such cycles (checked in the ingest benchmark: unfreezing and collecting after a run found
as much garbage with this policy as without it).
"""

from __future__ import annotations

import gc
from typing import Any


def freeze_loaded_state() -> None:
    """Collect once, then keep everything alive now out of later full passes (after loading)."""
    gc.collect()
    gc.freeze()


class FreezeAfterFullPass:
    """A ``gc.callbacks`` entry that freezes the survivors of each full pass."""

    def __init__(self) -> None:
        self.passes = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            self.passes += 1
            gc.freeze()

    def install(self) -> FreezeAfterFullPass:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
