"""OwnTracks location messages from victims' phones, converted to native ``Fix`` records.

OwnTracks (https://owntracks.org/booklet/tech/json/) publishes JSON with a
``_type`` on ``owntracks/{user}/{device}``.  Only ``_type: "location"`` is a
position; every other type (``transition``, ``lwt``, ``card``, ...) is normal
app traffic and yields no fix and no rejection.

Choices, because OwnTracks does not carry everything a native fix does:

* ``lat``, ``lon``, ``tst`` (epoch seconds) and ``acc`` (metres) are required.
  OwnTracks calls ``acc`` optional, but a victim position without an accuracy
  cannot be graded for certainty, so it is rejected (``missing_field``) rather
  than given an invented radius.
* ``seq`` is derived: ``tst * 1000 + crc32("lat,lon") % 1000``.  A republished
  identical location gets the same seq (the engine sees a duplicate); two
  different locations in the same second get different seqs; the number still
  grows with time.  It is deterministic across processes (no ``hash()``).
* ``vel`` (km/h) becomes ``spd`` in m/s; ``cog`` becomes ``hdg``.  iOS reports
  ``-1`` for an invalid speed or course, so a negative ``vel`` or ``cog``
  means "unknown" (None), not a rejected fix.
* every number is bounded as in a native fix (``devices.validate``): ``acc`` at most
  100 km, ``vel`` at most 3,600 km/h (above is ``out_of_range``); ``tst`` lies between
  2000 and a few minutes after arrival, so the derived seq fits 64 bits.
* ``src`` is always ``gnss`` (OwnTracks does not say); ``tid``,
  ``created_at``, ``t`` (trigger) and all other fields are ignored.
"""

from __future__ import annotations

import zlib
from typing import Any, cast

from devices.errors import InvalidPayload
from devices.model import Fix, RejectReason
from devices.validate import MAX_VEL_KMH, accuracy, check_time, in_range, integer, number, show

KMH_TO_MPS = 1.0 / 3.6


def owntracks_type(o: dict[str, Any]) -> str:
    """The ``_type`` of an OwnTracks message (required, text)."""
    kind = o.get("_type")
    if kind is None:
        raise InvalidPayload(RejectReason.MISSING_FIELD, "_type is required")
    if not isinstance(kind, str):
        raise InvalidPayload(RejectReason.BAD_TYPE, f"_type={show(kind)} is not text")
    return kind


def derive_seq(tst: int, lat: float, lon: float) -> int:
    """A per-device sequence number that makes (device, seq) identify an OwnTracks fix."""
    return tst * 1000 + zlib.crc32(f"{lat!r},{lon!r}".encode()) % 1000


def location_to_fix(
    o: dict[str, Any], device: str, arrival: float, max_future_s: float, min_time: float
) -> Fix:
    """A validated ``Fix`` from an OwnTracks ``location`` object already mapped to ``device``."""
    lat = in_range("lat", cast(float, number(o, "lat", True)), -90.0, 90.0)
    lon = in_range("lon", cast(float, number(o, "lon", True)), -180.0, 180.0)
    acc = accuracy("acc", cast(float, number(o, "acc", True)))
    tst = cast(int, integer(o, "tst", True, True))
    try:
        t = float(tst)
    except OverflowError:
        raise InvalidPayload(RejectReason.BAD_TIME, f"tst={show(tst)} is too large") from None
    check_time("tst", t, arrival, max_future_s, min_time)
    vel = number(o, "vel", False)
    if vel is not None and vel > MAX_VEL_KMH:
        raise InvalidPayload(RejectReason.OUT_OF_RANGE, f"vel={show(vel)} above {MAX_VEL_KMH:g} km/h")
    spd = vel * KMH_TO_MPS if vel is not None and vel >= 0 else None
    cog = number(o, "cog", False)
    hdg = in_range("cog", cog, 0.0, 360.0) if cog is not None and cog >= 0 else None
    batt = integer(o, "batt", False, True)
    if batt is not None and not 0 <= batt <= 100:
        raise InvalidPayload(RejectReason.OUT_OF_RANGE, f"batt={batt} outside [0, 100]")
    return Fix(
        device=device,
        seq=derive_seq(tst, lat, lon),
        t=t,
        lat=lat,
        lon=lon,
        acc=acc,
        arrival=arrival,
        spd=spd,
        hdg=hdg,
        batt=batt,
    )
