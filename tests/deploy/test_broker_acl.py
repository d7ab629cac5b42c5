"""The generated password file and ACL, enforced by a real mosquitto (issue 9, security).

Expected rights are written out here from the issue's rules, not read back
from the generator, so a generator bug cannot make its own test pass.

How "not delivered" is proven without sleeping: mosquitto routes a PUBLISH to
its subscribers' queues before it sends the PUBACK, in one single-threaded
loop.  So once a forbidden publish has been acknowledged, any message
published afterwards (the marker) reaches a subscriber after the forbidden one
would have; receiving the marker without the forbidden message proves it was
dropped.

Every login is its own client id (``use_username_as_clientid``), so a second
connection with the same username would close the first: ``login`` therefore
hands out one connection per user within a test.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _deploy_helpers import (
    ORDERS_DOC,
    Probe,
    RunningBroker,
    module_broker,
)

pytestmark = pytest.mark.integration

ENGINE, CENTRE = "emguard-engine", "centre"
ENGINE_PUB = f"{ENGINE}-pub"  # the engine's publishing login (engine/runtime/service.py's outbox)
# Worker logins <engine>-<n> and <engine>-<n>-pub: the StatefulSet's pods and compose's workers.
WORKERS = tuple(f"{ENGINE}-{n}" for n in range(8))
MONITORS = ("AM-1001", "AM-1002")
VICTIM_DEVICES = ("VD-2001", "VD-2002")
PHONE_USER, PHONE_DEVICE = "anna", "PH-2001"
NOT_AUTHORIZED = 0x87
PROTOCOLS = pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])

# What each account may read, from the issue: the engine every device topic and acks;
# the centre its alerts and dead letters; a device only its own prompts/warnings/commands.
_ENGINE_READS = {
    *(f"em/dev/{d}/{k}" for d in (*MONITORS, *VICTIM_DEVICES) for k in ("fix", "event")),
    "owntracks/anna/phone",
    "em/ack",
}
EXPECTED_READ: dict[str, set[str]] = {
    ENGINE: _ENGINE_READS,
    ENGINE_PUB: set(),  # publishes only: a leaked publishing password reads no position
    **{w: _ENGINE_READS for w in WORKERS},
    **{f"{w}-pub": set() for w in WORKERS},
    CENTRE: {"em/alerts/centre", "em/deadletter"},
    **{m: {f"em/cmd/subject/{m}", f"em/cmd/device/{m}"} for m in MONITORS},
    **{v: {f"em/alerts/victim/{v}", f"em/cmd/device/{v}"} for v in VICTIM_DEVICES},
    PHONE_USER: {f"em/alerts/victim/{PHONE_DEVICE}", f"em/cmd/device/{PHONE_DEVICE}"},
}

# Every (publisher, topic) a working system produces: each device's own traffic,
# every engine output, the centre's ack.
LEGIT_TRAFFIC: list[tuple[str, str]] = [
    *((d, f"em/dev/{d}/{k}") for d in (*MONITORS, *VICTIM_DEVICES) for k in ("fix", "event")),
    (PHONE_USER, "owntracks/anna/phone"),
    (CENTRE, "em/ack"),
    (ENGINE_PUB, "em/alerts/centre"),
    (ENGINE_PUB, "em/deadletter"),
    *((ENGINE_PUB, f"em/alerts/victim/{v}") for v in (*VICTIM_DEVICES, PHONE_DEVICE)),
    *((ENGINE_PUB, f"em/cmd/subject/{m}") for m in MONITORS),
    *((ENGINE_PUB, f"em/cmd/device/{d}") for d in (*MONITORS, *VICTIM_DEVICES, PHONE_DEVICE)),
]

# Filters a curious or malicious client might try; mosquitto 2.0 grants the SUBSCRIBE
# but must deliver only what the ACL lets the user read.
GREEDY_FILTERS = (
    "#",
    "em/#",
    "em/alerts/victim/#",
    "em/alerts/centre",
    "em/dev/#",
    "owntracks/#",
    "em/cmd/#",
)


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    """One broker for the module, started from the generated bundle (no TLS: ACL only)."""
    with module_broker(ORDERS_DOC, "emguard-acl-") as running:
        yield running


@pytest.fixture
def login(broker: RunningBroker, probes: Any) -> Any:
    """``login(user, **kw) -> Probe`` connected with the generated password; asserts acceptance.

    One connection per user and protocol within a test: the broker makes the username the
    client id, so a second connection of the same user would close the first.
    """
    open_: dict[str, Probe] = {}

    def connect(user: str, **kw: Any) -> Probe:
        protocol = kw.get("protocol", mqtt.MQTTv5)
        known = open_.get(user)
        if known is not None and not known.disconnected.is_set():
            if known.protocol == protocol or "protocol" not in kw:
                return known
            known.close()
        probe: Probe = probes(broker.port, user, broker.passwords[user], **kw)
        assert probe.accepted, f"{user} refused: {probe.connack}"
        open_[user] = probe
        return probe

    return connect


def test_every_generated_account_is_accepted_by_mosquitto(
    broker: RunningBroker, probes: Any
) -> None:
    """mosquitto accepts the pure-Python PBKDF2-SHA512 hash of every generated password."""
    assert set(broker.passwords) == set(EXPECTED_READ)
    for user, password in broker.passwords.items():
        for protocol in (mqtt.MQTTv5, mqtt.MQTTv311):
            probe = probes(broker.port, user, password, protocol=protocol)
            assert probe.accepted, f"{user} ({protocol}) refused: {probe.connack}"
            probe.close()
    assert broker.broker.problems() == []


@PROTOCOLS
@pytest.mark.parametrize(
    ("username", "password"),
    [
        (None, None),
        ("AM-1001", "wrong-password"),
        ("AM-1001", ""),
        ("AM-9999", "x"),
        (ENGINE, "guess"),
    ],
    ids=["anonymous", "wrong-password", "empty-password", "unknown-user", "engine-guess"],
)
def test_clients_without_valid_credentials_are_refused(
    broker: RunningBroker, probes: Any, protocol: int, username: str | None, password: str | None
) -> None:
    """Anonymous clients, wrong or empty passwords and unknown users get no session."""
    probe = probes(broker.port, username, password, protocol=protocol)
    assert not probe.accepted
    assert probe.connack is not None and probe.connack.is_failure


def test_another_accounts_password_is_refused(broker: RunningBroker, probes: Any) -> None:
    """Device B's password does not log in as device A (hashes are per user, salted)."""
    probe = probes(broker.port, "AM-1001", broker.passwords["AM-1002"])
    assert not probe.accepted


def _publish_all(login: Any, nonce: str, protocol: int) -> set[tuple[str, bytes]]:
    sent: set[tuple[str, bytes]] = set()
    publishers: dict[str, Probe] = {}
    for user, topic in LEGIT_TRAFFIC:
        if user not in publishers:
            publishers[user] = login(user, protocol=protocol)
        payload = f"{nonce} {user} {topic}".encode()
        rc = publishers[user].publish(topic, payload)
        assert not getattr(rc, "is_failure", False), (
            f"legit publish {user} -> {topic} refused: {rc}"
        )
        sent.add((topic, payload))
    return sent


# The worker logins have exactly the rights of the first pair (the generator builds them with the
# same function); reading as the first and the last worker of each kind covers them.
READERS = sorted(set(EXPECTED_READ) - set(WORKERS[1:]) - {f"{w}-pub" for w in WORKERS[:-1]})


@PROTOCOLS
@pytest.mark.parametrize("reader", READERS)
def test_each_account_reads_exactly_its_own_topics(login: Any, reader: str, protocol: int) -> None:
    """Subscribed to every filter it can think of, an account receives only the topics the rules give it."""
    probe = login(reader, protocol=protocol)
    for topic_filter in GREEDY_FILTERS:
        probe.subscribe(topic_filter)
    nonce = secrets.token_hex(4)
    sent = _publish_all(login, nonce, protocol)
    if not EXPECTED_READ[reader]:
        # Nothing it may read, so no marker it could receive: every PUBACK is in (the broker
        # has routed each message), and nothing arrives in a generous half second after.
        assert probe.received(1, timeout=0.5) == []
        return
    marker_topic = sorted(EXPECTED_READ[reader])[0]
    marker_user = next(u for u, t in LEGIT_TRAFFIC if t == marker_topic)
    marker = f"{nonce} marker".encode()
    login(marker_user).publish(marker_topic, marker)
    got = {m for m in probe.until(marker_topic, marker) if m[1].startswith(nonce.encode())}
    got.discard((marker_topic, marker))
    expected = {(t, p) for t, p in sent if t in EXPECTED_READ[reader]}
    assert got == expected


@pytest.mark.parametrize("monitor", MONITORS)
def test_offender_devices_never_receive_victim_warnings_or_centre_alerts(
    login: Any, monitor: str
) -> None:
    """An ankle monitor subscribed to em/alerts/victim/# and em/alerts/centre receives neither."""
    offender = login(monitor)
    offender.subscribe("em/alerts/victim/#")
    offender.subscribe("em/alerts/centre")
    offender.subscribe(f"em/cmd/subject/{monitor}")
    engine = login(ENGINE_PUB)
    for topic in [
        *(f"em/alerts/victim/{v}" for v in (*VICTIM_DEVICES, PHONE_DEVICE)),
        "em/alerts/centre",
    ]:
        engine.publish(topic, b'{"level": "alarm", "message": "leave now"}')
    engine.publish(f"em/cmd/subject/{monitor}", b"marker")
    assert offender.until(f"em/cmd/subject/{monitor}", b"marker") == [
        (f"em/cmd/subject/{monitor}", b"marker")
    ]


# (publisher, forbidden topic): spoofing another device, faking engine or centre traffic.
FORBIDDEN_WRITES = [
    ("AM-1001", "em/dev/AM-1002/fix"),
    ("AM-1001", "em/dev/AM-1002/event"),
    ("AM-1001", "em/dev/VD-2001/fix"),
    ("AM-1001", "em/dev/VD-2001/event"),
    ("AM-1001", "em/dev/AM-1001/cmd"),
    ("AM-1001", "owntracks/anna/phone"),
    ("VD-2001", "em/dev/VD-2002/event"),
    ("VD-2001", "em/dev/AM-1001/fix"),
    ("anna", "owntracks/anna/tablet"),
    ("anna", "owntracks/bob/phone"),
    ("anna", f"em/dev/{PHONE_DEVICE}/fix"),
    ("AM-1001", "em/ack"),
    ("VD-2001", "em/ack"),
    ("anna", "em/ack"),
    ("AM-1001", "em/alerts/victim/VD-2001"),
    ("AM-1001", "em/alerts/centre"),
    ("AM-1001", "em/cmd/device/VD-2001"),
    ("AM-1001", "em/cmd/subject/AM-1002"),
    ("VD-2001", "em/alerts/victim/VD-2002"),
    (CENTRE, "em/alerts/victim/VD-2001"),
    (CENTRE, "em/cmd/device/AM-1001"),
    (CENTRE, "em/dev/AM-1001/fix"),
    (ENGINE, "em/dev/AM-1001/fix"),
    (ENGINE, "em/alerts/victim/VD-2001"),  # the receiving login publishes nothing
    (ENGINE, "em/cmd/subject/AM-1001"),
    (ENGINE, "em/ack"),
    (ENGINE_PUB, "em/dev/AM-1001/fix"),
    (ENGINE_PUB, "em/ack"),
    ("emguard-engine-3", "em/alerts/centre"),
]


def _watcher(topic: str) -> tuple[str, str, str]:
    """(account that may read topic, account that may legitimately publish the marker, marker topic)."""
    parts = topic.split("/")
    if topic.startswith(("em/dev/", "owntracks/")) or topic == "em/ack":
        return ENGINE, "AM-1002", "em/dev/AM-1002/fix"
    if topic == "em/alerts/centre":
        return CENTRE, ENGINE_PUB, topic
    owner = parts[-1]
    reader = PHONE_USER if owner == PHONE_DEVICE else owner
    return reader, ENGINE_PUB, topic


@pytest.mark.parametrize(("publisher", "topic"), FORBIDDEN_WRITES)
def test_forbidden_publishes_are_refused_and_never_delivered(
    login: Any, publisher: str, topic: str
) -> None:
    """A client cannot publish as another device or fake engine/centre traffic: not delivered, PUBACK 0x87."""
    watcher_user, marker_user, marker_topic = _watcher(topic)
    watcher = login(watcher_user)
    watcher.subscribe("#")
    nonce = secrets.token_hex(4).encode()
    rc = login(publisher).publish(topic, nonce + b" forged")
    assert rc.value == NOT_AUTHORIZED, f"{publisher} -> {topic}: PUBACK {rc}"
    login(marker_user).publish(marker_topic, nonce + b" marker")
    got = watcher.until(marker_topic, nonce + b" marker")
    assert (topic, nonce + b" forged") not in got


@pytest.mark.parametrize(("publisher", "topic"), FORBIDDEN_WRITES[:6])
def test_forbidden_publishes_from_mqtt311_devices_are_dropped(
    login: Any, publisher: str, topic: str
) -> None:
    """MQTT 3.1.1 cannot report the refusal, but the spoofed message is still never delivered."""
    watcher_user, marker_user, marker_topic = _watcher(topic)
    watcher = login(watcher_user)
    watcher.subscribe("#")
    nonce = secrets.token_hex(4).encode()
    login(publisher, protocol=mqtt.MQTTv311).publish(topic, nonce + b" forged")
    login(marker_user).publish(marker_topic, nonce + b" marker")
    assert (topic, nonce + b" forged") not in watcher.until(marker_topic, nonce + b" marker")


def test_engine_reads_all_device_topics_through_a_shared_subscription(login: Any) -> None:
    """The engine's production filters ($share/emguard/...) receive every device's fixes and phone locations."""
    engine = login(ENGINE)
    for topic_filter in (
        "$share/emguard/em/dev/+/fix",
        "$share/emguard/em/dev/+/event",
        "$share/emguard/owntracks/+/+",
    ):
        engine.subscribe(topic_filter)
    nonce = secrets.token_hex(4).encode()
    expected = []
    for device in (*MONITORS, *VICTIM_DEVICES):
        for kind in ("fix", "event"):
            login(device).publish(f"em/dev/{device}/{kind}", nonce)
            expected.append((f"em/dev/{device}/{kind}", nonce))
    login(PHONE_USER).publish("owntracks/anna/phone", nonce)
    expected.append(("owntracks/anna/phone", nonce))
    assert sorted(engine.received(len(expected))) == sorted(expected)


def test_centre_acknowledgement_reaches_the_engine_but_not_devices(login: Any) -> None:
    """The centre's em/ack goes to the engine; an offender subscribed to em/ack gets nothing."""
    engine = login(ENGINE)
    engine.subscribe("em/ack")
    offender = login("AM-1001")
    offender.subscribe("em/ack")
    offender.subscribe("em/cmd/subject/AM-1001")
    ack = b'{"alert_id": "A-1", "action": "ack", "by": "op-7"}'
    assert not login(CENTRE).publish("em/ack", ack).is_failure
    assert engine.until("em/ack", ack) == [("em/ack", ack)]
    login(ENGINE_PUB).publish("em/cmd/subject/AM-1001", b"marker")
    assert offender.until("em/cmd/subject/AM-1001", b"marker") == [
        ("em/cmd/subject/AM-1001", b"marker")
    ]
