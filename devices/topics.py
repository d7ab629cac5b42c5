"""MQTT topic layout (contract §1): which topics carry what, and who sent it.

The device id in a native topic is the identity the broker authenticated (the
ACL lets a device publish only under its own id), so the decoder trusts the
topic over the payload and rejects a payload that names another device.

Received topics never carry a ``$share/{group}/`` prefix: MQTT v5 strips it
on delivery, so ``$share`` only appears in subscription filters built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TopicKind = Literal["fix", "event", "owntracks", "owntracks_other"]


@dataclass(frozen=True, slots=True)
class TopicRef:
    """What a received topic says: its kind and the sender it names.

    ``device`` is set for native topics (``{prefix}/dev/{device}/...``);
    ``owntracks_key`` (``"user/device"``) for OwnTracks topics, to be mapped to
    a device id through the registry.  ``owntracks_other`` is an OwnTracks
    sub-topic (``.../event``, ``.../info``, ``.../cmd``) that never carries a
    location and is ignored, not rejected.
    """

    kind: TopicKind
    device: str | None = None
    owntracks_key: str | None = None


@dataclass(frozen=True, slots=True)
class TopicScheme:
    """Topic names under a configurable prefix (default ``em``) plus the OwnTracks base topic."""

    prefix: str = "em"
    owntracks_prefix: str = "owntracks"

    def parse(self, topic: str) -> TopicRef | None:
        """The kind and sender of a received topic, or None when it is not one we consume."""
        dev_base = self.prefix + "/dev/"
        if topic.startswith(dev_base):
            device, sep, kind = topic[len(dev_base) :].partition("/")
            if not device or not sep or device in ("+", "#"):
                return None
            if kind == "fix":
                return TopicRef("fix", device=device)
            if kind == "event":
                return TopicRef("event", device=device)
            return None
        ot_base = self.owntracks_prefix + "/"
        if topic.startswith(ot_base):
            parts = topic[len(ot_base) :].split("/")
            if len(parts) < 2 or not parts[0] or not parts[1]:
                return None
            key = parts[0] + "/" + parts[1]
            if len(parts) == 2:
                return TopicRef("owntracks", owntracks_key=key)
            return TopicRef("owntracks_other", owntracks_key=key)
        return None

    def fix_topic(self, device: str) -> str:
        """Where a native device publishes its fixes."""
        return f"{self.prefix}/dev/{device}/fix"

    def event_topic(self, device: str) -> str:
        """Where a native device publishes its events."""
        return f"{self.prefix}/dev/{device}/event"

    def owntracks_topic(self, key: str) -> str:
        """Where an OwnTracks phone ``user/device`` publishes its locations."""
        return f"{self.owntracks_prefix}/{key}"

    @property
    def deadletter_topic(self) -> str:
        """Where the engine republishes rejected messages (see ``dead_letter_record``)."""
        return f"{self.prefix}/deadletter"

    def subscriptions(self, share_group: str | None = None) -> tuple[str, ...]:
        """Subscription filters for everything devices send.

        With ``share_group`` the filters become MQTT v5 shared subscriptions so
        several engine workers split the load (contract §1, scale-out).
        """
        filters = (
            f"{self.prefix}/dev/+/fix",
            f"{self.prefix}/dev/+/event",
            f"{self.owntracks_prefix}/+/+",
        )
        if share_group is None:
            return filters
        return tuple(f"$share/{share_group}/{f}" for f in filters)
