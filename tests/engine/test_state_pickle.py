"""Episode and battery state pickles the same in both builds, and parts stored before still load.

The compiled build (engine.tools.native) cannot rebuild a slots dataclass from pickle's default form,
so these classes pickle as constructor calls (engine.core.state_pickle); tests/test_native_build.py
moves whole engines' state between the builds.  Here: the round trip, and the old form.
"""

from __future__ import annotations

import copyreg
import dataclasses
import io
import pickle
from collections import deque
from typing import Any

import pytest

from devices.model import Fix
from engine.core import state_unpickle
from engine.core.rules.device_events import BatteryTrend
from engine.core.rules.proximity import PairEpisode
from engine.core.rules.zones import ZoneEpisode
from engine.core.tracks import TrackPoint

POINT = TrackPoint(1_795_000_000.0, 93_000.5, 437_000.25, 8.0, "AM-1:7", "gnss")
STATES: list[Any] = [
    ZoneEpisode(
        possible_run=2, clear_run=1, candidate_start=1_795_000_000.0, outside_since=None,
        window=(1_794_990_000.0, 1_795_020_000.0), forewarned=True, pursuit=True,
        unconfirmed=POINT, last_outside=POINT, last_t=1_795_000_010.0, crossed=(1.0, 2.0),
    ),
    PairEpisode(start=5.0, lower_since=6.0, lower_level="warning", clear_run=1, pursuit=True,
                possible_run=1, last_t=7.0),
    BatteryTrend(samples=deque([(1.0, 80.0), (2.0, 79.5)], maxlen=32), charging=True),
]


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


class _OldForm(pickle.Pickler):
    """Pickles these classes as pickle's default for a slots dataclass did before __reduce__."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in (ZoneEpisode, PairEpisode, BatteryTrend):
            return (copyreg.__newobj__, (type(obj),), (None, _fields(obj)))
        return NotImplemented


def _old_form(obj: Any) -> bytes:
    buf = io.BytesIO()
    _OldForm(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


@pytest.mark.parametrize("state", STATES, ids=lambda s: type(s).__name__)
def test_round_trip_keeps_every_field(state: Any) -> None:
    back = pickle.loads(pickle.dumps(state))
    assert type(back) is type(state) and _fields(back) == _fields(state)
    if isinstance(state, BatteryTrend):
        assert back.samples.maxlen == 32


@pytest.mark.parametrize("state", STATES, ids=lambda s: type(s).__name__)
def test_a_part_stored_before_the_reductions_still_loads(state: Any) -> None:
    back = state_unpickle.loads(_old_form(state))
    assert type(back) is type(state) and _fields(back) == _fields(state)


def test_a_field_added_since_gets_its_default() -> None:
    """An old part lacks fields added later: restore_slots sets the defaults first."""
    old = {k: v for k, v in _fields(STATES[0]).items() if k != "crossed"}
    blob = _old_form(ZoneEpisode())  # a valid old-form pickle, then its state replaced
    back = pickle.loads(blob)
    back.__setstate__((None, old))
    assert back.crossed is None and back.possible_run == 2


FIX = Fix("AM-1", 7, 1_795_000_000.0, 51.9, 4.47, 8.0, 1_795_000_001.0, 1.5, 90.0, 9, "wifi", 80, "ok")


def test_a_fix_pickles_as_its_constructor_call() -> None:
    """A waiting fix is stored with its case: it comes back equal, field for field."""
    back = pickle.loads(pickle.dumps(FIX))
    assert type(back) is Fix and back == FIX and dataclasses.astuple(back) == dataclasses.astuple(FIX)


def test_a_fix_stored_as_a_frozen_dataclass_still_loads() -> None:
    """Before Fix had a written constructor it pickled as a frozen slots dataclass does:
    copyreg's __newobj__ with the field values as a list (dataclasses' __getstate__)."""

    class OldFix(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is Fix:
                return (copyreg.__newobj__, (Fix,), list(dataclasses.astuple(obj)))
            return NotImplemented

    buf = io.BytesIO()
    OldFix(buf, protocol=pickle.HIGHEST_PROTOCOL).dump([FIX])
    assert state_unpickle.loads(buf.getvalue()) == [FIX]  # how stored parts are read
