"""Reading stored state parts, including forms written by earlier versions.

Parts (engine.core.case_state) are pickles of the engine's state classes.  One old form, copyreg's
for a slots dataclass (``engine.core.state_pickle``), first makes a blank object with
``cls.__new__(cls)`` (pickle's NEWOBJ) and then sets its state; in the compiled build
(engine.tools.native) that ``__new__`` runs a native class's written ``__init__``, which for ``Fix``,
``DeviceTrack``, ``Alert`` and ``HistoryEntry`` needs arguments.  ``loads`` hands pickle a
stand-in for those classes:
called with arguments (the current form) it is the class itself, and its blank object is one
made with placeholder values, which the stored state then replaces.

Not compiled: mypyc cannot compile a subclass of the C unpickler.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

from devices.model import Fix
from engine.core.alerts import Alert, HistoryEntry
from engine.core.tracks import DeviceTrack


def _stand_in(cls: type, blank: Callable[[], Any]) -> type:
    class StandIn:
        def __new__(_: type, *args: Any, **kwargs: Any) -> Any:
            return cls(*args, **kwargs) if args or kwargs else blank()

    return StandIn


_STAND_INS: dict[tuple[str, str], type] = {
    (c.__module__, c.__qualname__): _stand_in(c, b)
    for c, b in (
        (Fix, lambda: Fix("", 0, 0.0, 0.0, 0.0, 1.0, 0.0)),
        (DeviceTrack, lambda: DeviceTrack("")),
        (Alert, lambda: Alert("", "", "info", "open", None, None, None, None, 0.0, 0.0, 0.0, 0.0)),
        (HistoryEntry, lambda: HistoryEntry(0.0, "open", "info", "")),
    )
}


def loads(blob: bytes) -> Any:
    """``pickle.loads`` for stored state parts, old forms included."""
    return _PartUnpickler(io.BytesIO(blob)).load()


class _PartUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _STAND_INS.get((module, name))
        return found if found is not None else super().find_class(module, name)
