"""Operator actions arriving over MQTT (``em/ack``, contract §1), parsed within fixed limits.

``em/ack`` is an inbound channel like the devices' topics: whatever arrives on it must end as
an action or as a dead letter with its reason, never as an exception in the processing task.
A payload 100,000 brackets deep stopped all processing once (``RecursionError`` escaped the
JSON decoder), and a 2 MB note was stored, published and logged twice.  So the payload is
decoded by msgspec into ``AckCommand``, whose field lengths are checked in C, after a size
check on the raw bytes; any failure is an ``InvalidAck`` with a reason code.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from engine.errors import EngineError

MAX_ACK_BYTES: Final = 16_384
MAX_ID_CHARS: Final = 128
MAX_NAME_CHARS: Final = 200
MAX_NOTE_CHARS: Final = 4_000  # an operator's note, over MQTT or HTTP alike

AlertId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
Note = Annotated[str, msgspec.Meta(max_length=MAX_NOTE_CHARS)]


class InvalidAck(EngineError):
    """An ``em/ack`` payload outside the contract or its limits; ``reason`` is the dead letter's."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class AckCommand(msgspec.Struct, frozen=True):
    """One operator action: ``{"alert_id", "action", "by", "note", "outcome", "target"}``.

    ``action`` is checked by ``Engine.act`` (``engine.core.alert_records.ACTIONS``: claim, ack,
    escalate, note, close or its older name resolve, and prompt, which asks the subject on his
    ankle monitor to call the centre); an unknown one is refused there and dead-lettered.
    """

    alert_id: AlertId
    action: Name
    by: Name = ""
    note: Note = ""
    outcome: Name = ""
    target: Name = ""


_decoder: Final = msgspec.json.Decoder(AckCommand)


def parse_ack(payload: bytes) -> AckCommand:
    """The action in ``payload``; ``InvalidAck`` (reason ``too_large`` or ``bad_ack``) otherwise."""
    if len(payload) > MAX_ACK_BYTES:
        raise InvalidAck("too_large", f"ack payload of {len(payload)} bytes (limit {MAX_ACK_BYTES})")
    try:
        return _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise InvalidAck("bad_ack", f"ack payload: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidAck("bad_ack", f"ack payload is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidAck("too_deep", "ack payload nested too deeply") from None
