"""Pickles of the engine's state classes that read the same in the pure and the compiled build.

The per-fix modules can be compiled with mypyc (``engine.tools.native``).  A compiled dataclass is a
native class, and pickle's default for a slots dataclass (``copyreg`` with a ``(None, slots)``
state) does not rebuild one: it comes back with its attributes undefined.  So each class whose
objects go into a case part (``engine.core.case_state``) pickles as a call of its constructor with
its field values, which both builds read and write alike: a store written by one build is
restored by the other (a deployment switching builds keeps its alerts and debounce state).

Parts stored before these reductions hold the ``copyreg`` form; ``restore_slots`` reads it
(``engine.core.state_unpickle`` reads every stored part).
"""

from __future__ import annotations

from typing import Any


def restore_slots(obj: Any, state: tuple[dict[str, Any] | None, dict[str, Any]]) -> None:
    """``__setstate__`` for the ``copyreg`` form of a slots dataclass whose fields all have defaults.

    The defaults first, so that a field added since the object was stored has its default,
    then the stored slots.
    """
    obj.__init__()
    for name, value in state[1].items():
        setattr(obj, name, value)
