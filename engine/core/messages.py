"""Outgoing messages built by the pure engine (contract §5, §6), published by the service.

The builders here are the only place offender- and victim-facing payloads are
made, so the privacy rule is enforced in one spot: the offender's channel
never carries the victim's position, distance, bearing or zone geometry, and
the victim's never carries the offender's coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from devices.timeutil import format_time
from engine.core.alert_records import LEVEL_RANK, Alert

Channel = Literal["centre", "victim", "subject", "device", "deadletter", "forward"]


@dataclass(slots=True, init=False)
class Outgoing:
    """One message to publish: topic, JSON-able payload, and which channel it belongs to.

    Never changed once made (a written ``__init__``, not ``frozen``: engine.tools.native).
    """

    channel: Channel
    topic: str
    payload: dict[str, Any]

    def __init__(self, channel: Channel, topic: str, payload: dict[str, Any]) -> None:
        self.channel = channel
        self.topic = topic
        self.payload = payload


def centre_message(prefix: str, alert: Alert) -> Outgoing:
    """Every alert and every change of it goes to the monitoring centre in full detail."""
    return Outgoing("centre", f"{prefix}/alerts/centre", alert.to_wire())


_VICTIM_TEXT: dict[str, tuple[str, str]] = {
    "proximity": (
        "The person you are protected from may be near you.",
        "Go to a safe place now. Call 112 if you are in danger.",
    ),
    "exclusion": (
        "The person you are protected from has entered an area he is banned from near you.",
        "Stay alert, go to or stay in a safe place. Call 112 if you are in danger.",
    ),
    "panic": (
        "Your alarm has been received by the monitoring centre.",
        "Stay in a safe place. The police have been informed.",
    ),
    "device_silent": (
        "We cannot see your device's position right now.",
        "Keep your device switched on and with you. Call 112 if you are in danger.",
    ),
}

_STATUS_TEXT: dict[str, str] = {
    "acknowledged": "The monitoring centre is handling this warning.",
    "escalated": "The monitoring centre has escalated this warning.",
    "closed": "This warning has been handled and closed by the monitoring centre.",
}


def distance_band(distance_m: float | None) -> str | None:
    """A coarse band for the victim ("within 1 km"), never the exact distance or direction."""
    if distance_m is None:
        return None
    for limit, text in ((250, "within 250 m"), (500, "within 500 m"), (1000, "within 1 km"),
                        (2000, "within 2 km"), (5000, "within 5 km")):
        if distance_m <= limit:
            return text
    return "more than 5 km away"


_ESCALATED_POLICE = "The monitoring centre has escalated this warning to the police."
_ENDED_TEXT = (
    "The person you are protected from is no longer near you. "
    "The monitoring centre keeps watching and will contact you."
)


def victim_warning(prefix: str, device: str, alert: Alert, now: float) -> Outgoing:
    """The warning on the victim's own device: level, plain advice, a coarse distance band."""
    message, advice = _VICTIM_TEXT.get(alert.kind, _VICTIM_TEXT["proximity"])
    payload: dict[str, Any] = {
        "v": 1,
        "alert_id": alert.alert_id,
        "level": alert.level,
        "message": message,
        "advice": advice,
        "t": format_time(now),
    }
    band = distance_band(alert.distance_m) if alert.kind == "proximity" else None
    if band:
        payload["near"] = band
    return Outgoing("victim", f"{prefix}/alerts/victim/{device}", payload)


def victim_status(prefix: str, device: str, alert: Alert, now: float) -> Outgoing:
    """A status update so the victim hears back what was done (domain fact 8)."""
    by_engine = bool(alert.history) and alert.history[-1].by == "engine"
    if by_engine and alert.condition == "cleared" and alert.state != "escalated":
        # the engine saw the danger pass (he moved away); nobody has "handled" anything yet
        status, message = "ended", _ENDED_TEXT
    elif alert.state == "closed":
        status, message = "handled", _STATUS_TEXT["closed"]
    elif alert.state == "escalated" and alert.escalated_to == "police":
        status, message = "escalated", _ESCALATED_POLICE
    else:
        status = alert.state
        message = _STATUS_TEXT.get(alert.state, "Your warning is being handled.")
    return Outgoing(
        "victim",
        f"{prefix}/alerts/victim/{device}",
        {
            "v": 1,
            "alert_id": alert.alert_id,
            "level": alert.level,
            "status": status,
            "message": message,
            "t": format_time(now),
        },
    )


def subject_prompt(prefix: str, device: str, instruction: str, level: str, now: float) -> Outgoing:
    """An instruction on the ankle monitor. Carries nothing about the victim, by construction."""
    if instruction not in ("leave_area", "approaching_zone", "contact_centre"):
        raise ValueError(f"unknown subject instruction {instruction!r}")
    return Outgoing(
        "subject",
        f"{prefix}/cmd/subject/{device}",
        {"v": 1, "t": format_time(now), "instruction": instruction, "level": level},
    )


#: the ``level`` of an operator's prompt: always the same, whatever the alert's level, so that
#: nothing in the message follows her distance (contract §6 keeps the field)
OPERATOR_PROMPT_LEVEL = "warning"


def operator_prompt(prefix: str, device: str, now: float) -> Outgoing:
    """``contact_centre`` on the ankle monitor because an operator asked (``prompt`` on an
    alert): the contract §6 form with a fixed level; nothing from the alert, so nothing about
    the victim (no distance, band, level or zone), and sent when the operator chose."""
    return subject_prompt(prefix, device, "contact_centre", OPERATOR_PROMPT_LEVEL, now)


def set_interval(prefix: str, device: str, interval_s: int, until: float | None, now: float) -> Outgoing:
    """Pursuit mode: ask a device to report faster while risk is high, or back to normal."""
    payload: dict[str, Any] = {
        "v": 1,
        "t": format_time(now),
        "instruction": "set_interval",
        "interval_s": int(interval_s),
    }
    if until is not None:
        payload["until"] = format_time(until)
    return Outgoing("device", f"{prefix}/cmd/device/{device}", payload)


def deadletter(prefix: str, record: dict[str, Any]) -> Outgoing:
    """A rejected message with its reason, so nothing a device sent is lost silently."""
    return Outgoing("deadletter", f"{prefix}/deadletter", record)


def victim_should_hear(alert: Alert, warn_level: str) -> bool:
    """Two-tier response: the victim is warned from ``warn_level`` up (default alarm)."""
    return LEVEL_RANK[alert.level] >= LEVEL_RANK[warn_level]
