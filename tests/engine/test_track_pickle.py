"""A device track survives pickling (it is stored with every commit of its case) unchanged."""

from __future__ import annotations

import pickle

from engine.core.config import RuleConfig
from engine.core.testing import T0
from engine.core.tracks import TRACK_POINTS, DeviceTrack, TrackPoint


def _point(i: int) -> TrackPoint:
    return TrackPoint(T0 + i, 1000.0 + i, 2000.0 - i, 8.0, f"k{i}", "gnss")


def test_a_full_track_round_trips_equal_with_its_point_cap() -> None:
    t = DeviceTrack("AM-1")
    for i in range(TRACK_POINTS + 5):
        t.accept(_point(i), RuleConfig())
    for seq in (1, 2, 3, 7):
        t.is_duplicate(seq)
    t.suspect = [_point(500)]
    t.last_seq, t.unnumbered, t.newest_t, t.last_arrival = 7, 2, T0 + 68, T0 + 70
    back = pickle.loads(pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == t
    assert type(back.points) is list and len(back.points) == TRACK_POINTS
    assert back.is_duplicate(7) and not back.is_duplicate(8)


def test_points_are_stored_as_plain_tuples() -> None:
    t = DeviceTrack("AM-1")
    for i in range(40):
        t.accept(_point(i), RuleConfig())
    blob = pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"TrackPoint" not in blob and blob.count(b"_restore_track") == 1
    assert len(blob) < 40 * 60  # ~50 bytes a point: four floats, the key and the source
