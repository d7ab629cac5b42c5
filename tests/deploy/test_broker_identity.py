"""A login is bound to its own client id: no device can knock the engine or a victim off (issue 21).

MQTT says a second connection with a client id already in use takes over and
the broker closes the first.  Without ``use_username_as_clientid`` any device
with valid credentials of its own could send ``emguard-engine`` (or a victim
device's id) as its client id and the engine, or the victim's warnings, would
be disconnected, again and again, with nothing but a connect line in the
broker log.  Measured on the previous generated config: every hijack case
here fails (the target's connection is closed, "already connected, closing
old connection" is logged), and the engine's publishing login does not exist.

With the setting, the client id a device sends is ignored and replaced by its
username, so the attacker only ever takes over its own session.  The price:
one login holds one connection, hence the engine's two logins (receiving and
``-pub``) and the per-worker ones, which must all be connected at once.
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

ENGINE, ENGINE_PUB = "emguard-engine", "emguard-engine-pub"
WORKER, WORKER_PUB = "emguard-engine-0", "emguard-engine-0-pub"
VICTIM = "VD-2001"
ATTACKER = "AM-1001"
PROTOCOLS = pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    """One broker for the module, started from the generated bundle (no TLS)."""
    with module_broker(ORDERS_DOC, "emguard-id-") as running:
        yield running


@pytest.fixture
def login(broker: RunningBroker, probes: Any) -> Any:
    """``login(user, client_id=..., **kw) -> Probe`` with the generated password; asserts acceptance."""

    def connect(user: str, **kw: Any) -> Probe:
        probe: Probe = probes(broker.port, user, broker.passwords[user], **kw)
        assert probe.accepted, f"{user} ({kw}) refused: {probe.connack}"
        return probe

    return connect


def _engine_pair(login: Any, user: str, client_id: str) -> tuple[Probe, Probe]:
    """The engine's two connections as engine/runtime/service.py opens them: receiving (persistent) and -pub."""
    receiving = login(user, client_id=client_id, session_expiry=3600)
    publishing = login(user + "-pub", client_id=client_id + "-pub")
    return receiving, publishing


def _still_receives(receiving: Probe, login: Any, nonce: bytes) -> None:
    """A device fix published now reaches ``receiving`` (subscribed to em/dev/+/fix)."""
    login("AM-1002").publish("em/dev/AM-1002/fix", nonce)
    assert ("em/dev/AM-1002/fix", nonce) in receiving.until("em/dev/AM-1002/fix", nonce)


def test_engine_receiving_and_publishing_logins_are_connected_at_once(login: Any) -> None:
    """Both engine connections, and a worker's pair beside them, stay up and do their jobs together."""
    engine, engine_pub = _engine_pair(login, ENGINE, ENGINE)
    worker, worker_pub = _engine_pair(login, WORKER, WORKER)
    victim = login(VICTIM, client_id=VICTIM)
    victim.subscribe(f"em/alerts/victim/{VICTIM}")
    engine.subscribe("em/dev/+/fix")
    worker.subscribe("em/dev/+/fix")
    nonce = secrets.token_hex(4).encode()
    _still_receives(engine, login, nonce)
    assert ("em/dev/AM-1002/fix", nonce) in worker.until("em/dev/AM-1002/fix", nonce)
    for pub in (engine_pub, worker_pub):
        assert not pub.publish(f"em/alerts/victim/{VICTIM}", nonce).is_failure
        assert victim.until(f"em/alerts/victim/{VICTIM}", nonce)[-1] == (
            f"em/alerts/victim/{VICTIM}",
            nonce,
        )
    for probe in (engine, engine_pub, worker, worker_pub, victim):
        assert not probe.disconnected.is_set(), probe.username


def test_receiving_login_cannot_publish_and_publishing_login_cannot_read(login: Any) -> None:
    """Each engine login holds only its half of the rights: a leaked -pub password reads no position."""
    engine, engine_pub = _engine_pair(login, ENGINE, ENGINE)
    engine_pub.subscribe("#")
    engine.subscribe("em/dev/+/fix")
    engine.subscribe(f"em/alerts/victim/{VICTIM}")
    nonce = secrets.token_hex(4).encode()
    assert engine.publish(f"em/alerts/victim/{VICTIM}", nonce + b" forged").value == 0x87
    _still_receives(engine, login, nonce)
    assert engine_pub.received(1, timeout=0.5) == []


@PROTOCOLS
@pytest.mark.parametrize(
    ("target", "client_id"),
    [
        (ENGINE, "emguard-engine"),
        (ENGINE_PUB, "emguard-engine-pub"),
        (WORKER, "emguard-engine-0"),
        (VICTIM, VICTIM),
    ],
    ids=["engine", "engine-pub", "worker", "victim-device"],
)
def test_a_device_sending_anothers_client_id_cannot_knock_it_off(
    broker: RunningBroker, login: Any, target: str, client_id: str, protocol: int
) -> None:
    """An ankle monitor logging in with its own password and the target's client id leaves the target connected."""
    victim = login(VICTIM, client_id=VICTIM)
    victim.subscribe(f"em/alerts/victim/{VICTIM}")
    engine, engine_pub = _engine_pair(login, ENGINE, ENGINE)
    engine.subscribe("em/dev/+/fix")
    worker, _ = _engine_pair(login, WORKER, WORKER)
    worker.subscribe("em/dev/+/fix")
    targets = {ENGINE: engine, ENGINE_PUB: engine_pub, WORKER: worker, VICTIM: victim}
    log_before = len(broker.broker.log_text())

    attacker = login(ATTACKER, client_id=client_id, protocol=protocol)
    nonce = secrets.token_hex(4).encode()
    # The attacker's connection is its own: it may still send its own fixes.
    assert not attacker.publish(f"em/dev/{ATTACKER}/fix", nonce).is_failure
    # Every target still works: the engines receive fixes, the victim receives a warning.
    _still_receives(engine, login, nonce)
    assert ("em/dev/AM-1002/fix", nonce) in worker.until("em/dev/AM-1002/fix", nonce)
    assert not engine_pub.publish(f"em/alerts/victim/{VICTIM}", nonce).is_failure
    assert (f"em/alerts/victim/{VICTIM}", nonce) in victim.until(
        f"em/alerts/victim/{VICTIM}", nonce
    )
    assert not targets[target].disconnected.is_set(), f"{target} was disconnected"
    for name, probe in targets.items():
        assert not probe.disconnected.is_set(), f"{name} was disconnected"
    log = broker.broker.log_text()[log_before:]
    assert "closing old connection" not in log, log


def test_a_second_login_with_the_same_username_takes_over_its_own_session_only(
    login: Any,
) -> None:
    """Control: the take-over still happens, but only within one login (a device reconnecting)."""
    engine, _ = _engine_pair(login, ENGINE, ENGINE)
    first = login(ATTACKER, client_id="firmware-a")
    login(ATTACKER, client_id="firmware-b")
    assert first.disconnected.wait(5), "the older connection of the same login stays up"
    assert not engine.disconnected.is_set()
