"""The wire form of a native fix, for msgspec: typed decoding that checks types and ranges in C.

Nearly every fix on the wire is valid, so the decoder first asks msgspec to decode straight
into ``WireFix``, whose types and range constraints are checked in C
(``devices.fastpath.fast_fixes`` turns it into ``Fix`` records).  This module stays Python in
the compiled build (engine.tools.native): mypyc turns a msgspec ``Struct`` into a class msgspec no
longer decodes into.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from devices.validate import MAX_ACC_M, MAX_SATS, MAX_SEQ, MAX_SPD_MPS, MAX_TIME_TEXT


class WireFix(msgspec.Struct, gc=False):
    """A native fix (contract §2) as typed on the wire; unknown fields are ignored.

    The bounds are ``devices.validate``'s own, so whatever this type admits the slow path
    admits too (the fast path's invariant).
    """

    v: int
    device: Annotated[str, msgspec.Meta(min_length=1)]
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
    t: int | Annotated[str, msgspec.Meta(max_length=MAX_TIME_TEXT)]
    lat: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    lon: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
    acc: Annotated[float, msgspec.Meta(gt=0.0, le=MAX_ACC_M)]
    spd: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_SPD_MPS)] | None = None
    hdg: Annotated[float, msgspec.Meta(ge=0.0, le=360.0)] | None = None
    sats: Annotated[int, msgspec.Meta(ge=0, le=MAX_SATS)] | None = None
    src: Literal["gnss", "wifi", "cell"] | None = None
    batt: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    strap: Literal["ok", "open", "cut"] | None = None


decode_one = msgspec.json.Decoder(WireFix).decode
decode_many = msgspec.json.Decoder(list[WireFix]).decode
DOUBT = (msgspec.MsgspecError, ValueError, OverflowError, RecursionError)
