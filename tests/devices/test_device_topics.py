"""Tests for devices.topics (topic layout) and the fast Fix constructor of devices.wire."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from devices.model import Fix
from devices.topics import TopicRef, TopicScheme


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("em/dev/AM-1001/fix", TopicRef("fix", device="AM-1001")),
        ("em/dev/AM-1001/event", TopicRef("event", device="AM-1001")),
        ("owntracks/anna/phone", TopicRef("owntracks", owntracks_key="anna/phone")),
        ("owntracks/anna/phone/event", TopicRef("owntracks_other", owntracks_key="anna/phone")),
        ("owntracks/anna/phone/info", TopicRef("owntracks_other", owntracks_key="anna/phone")),
        ("em/dev/AM-1001/fix/x", None),
        ("em/dev/AM-1001", None),
        ("em/dev//fix", None),
        ("em/dev/+/fix", None),
        ("em/alerts/centre", None),
        ("em/cmd/device/AM-1001", None),
        ("owntracks/anna", None),
        ("owntracks//phone", None),
        ("$share/g/em/dev/AM-1001/fix", None),
        ("EM/dev/AM-1001/fix", None),
    ],
)
def test_parse_default_scheme(topic: str, expected: TopicRef | None) -> None:
    """Received topics map to their kind and sender, anything else to None."""
    assert TopicScheme().parse(topic) == expected


def test_custom_prefixes() -> None:
    """Both the native prefix and the OwnTracks base topic are configurable."""
    scheme = TopicScheme(prefix="nl/em", owntracks_prefix="ot")
    assert scheme.parse("nl/em/dev/X/fix") == TopicRef("fix", device="X")
    assert scheme.parse("ot/u/d") == TopicRef("owntracks", owntracks_key="u/d")
    assert scheme.parse("em/dev/X/fix") is None and scheme.parse("owntracks/u/d") is None


def test_topic_builders_round_trip() -> None:
    """Topics built by the scheme parse back to the same sender."""
    s = TopicScheme()
    assert s.parse(s.fix_topic("VD-1")) == TopicRef("fix", device="VD-1")
    assert s.parse(s.event_topic("VD-1")) == TopicRef("event", device="VD-1")
    assert s.parse(s.owntracks_topic("a/b")) == TopicRef("owntracks", owntracks_key="a/b")
    assert s.deadletter_topic == "em/deadletter"


def test_subscriptions_plain_and_shared() -> None:
    """Subscription filters cover fixes, events and OwnTracks; shared ones carry $share/group."""
    s = TopicScheme()
    assert s.subscriptions() == ("em/dev/+/fix", "em/dev/+/event", "owntracks/+/+")
    assert s.subscriptions("workers") == (
        "$share/workers/em/dev/+/fix",
        "$share/workers/em/dev/+/event",
        "$share/workers/owntracks/+/+",
    )


def test_fix_is_a_record_built_by_its_written_constructor() -> None:
    """Fix(...) positionally and by keyword give equal, hashable records with the evidence key."""
    args: tuple[Any, ...] = ("AM-1", 7, 1.5, 51.0, 4.0, 8.0, 2.5, None, 90.0, 6, "wifi", 40, "open")
    names = [f.name for f in dataclasses.fields(Fix)]
    a, b = Fix(*args), Fix(**dict(zip(names, args, strict=True)))
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert dataclasses.astuple(a) == args and a.key == "AM-1:7"
    plain = Fix("AM-1", 7, 1.5, 51.0, 4.0, 8.0, 2.5)
    assert (plain.spd, plain.hdg, plain.sats, plain.src, plain.batt, plain.strap) == (
        None, None, None, "gnss", None, None,
    )
