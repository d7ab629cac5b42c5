"""Move a trace's device times by a constant, so a recorded trace plays live as it was recorded.

A trace's device times lie in the past. Published as they are onto a live ``emguard serve``,
every fix arrives minutes or weeks after its device time, so the engine marks everything late
and reports reception gaps: a different story from ``emguard replay`` (a two-week-old trace
gave 104 alerts there, 90 of them reception-gap infos, against 28 in replay). Shifting every
device time by one offset (publish start minus the trace's first arrival) keeps the spacing of
device times, so speeds and distances are as recorded, and keeps each message exactly as late
(or as early) relative to its arrival as it was when recorded.

Only the device-time fields the contract defines are moved: ``t`` of a native fix or event
(RFC 3339 text or epoch milliseconds, §2 and §3; also inside a burst) and ``tst`` of an
OwnTracks location (epoch seconds). Anything else, including payloads that are not JSON, is
published unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from devices.timeutil import format_time, parse_time


def shift_payload(topic: str, payload: bytes, offset_s: float) -> bytes:
    """``payload`` with its device time(s) moved by ``offset_s`` seconds; unchanged if it has none."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return payload
    if topic.startswith("owntracks/"):
        shifted = _shift_owntracks(doc, offset_s)
    else:
        shifted = [_shift_native(d, offset_s) for d in doc] if isinstance(doc, list) else _shift_native(doc, offset_s)
    return payload if shifted == doc else json.dumps(shifted).encode()


def _shift_native(doc: Any, offset_s: float) -> Any:
    if not isinstance(doc, dict) or "t" not in doc:
        return doc
    t = doc["t"]
    if isinstance(t, bool):
        return doc
    if isinstance(t, int):  # epoch milliseconds stay epoch milliseconds
        return {**doc, "t": t + round(offset_s * 1000)}
    if isinstance(t, str):
        try:
            return {**doc, "t": format_time(parse_time(t) + offset_s)}
        except (ValueError, OverflowError):
            return doc
    return doc


def _shift_owntracks(doc: Any, offset_s: float) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("tst"), int) and not isinstance(doc["tst"], bool):
        return {**doc, "tst": doc["tst"] + round(offset_s)}
    return doc
