"""The generated TLS listener, proven with a real mosquitto and a CA made in the test."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _deploy_helpers import Probe, RunningBroker, make_ca, plain_connect_reply, run_generated_broker

from engine.core.orders import OrderBook
from engine.tools.deploy_mosquitto import TlsPaths

pytestmark = pytest.mark.integration

# A minimal MQTT 3.1.1 CONNECT packet (client id "x", clean session, keepalive 30).


@pytest.fixture
def tls_broker(book: OrderBook, broker_dir: Path, start_broker: Any) -> tuple[RunningBroker, Path]:
    """A broker with only a TLS listener, its server certificate signed by a fresh test CA."""
    ca = make_ca(broker_dir / "certs")
    tls = TlsPaths(ca.ca_cert, ca.server_cert, ca.server_key)
    return run_generated_broker(book, broker_dir, start_broker, tls=tls), ca.ca_cert


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v311"])
def test_client_trusting_the_ca_connects_and_exchanges_messages(
    tls_broker: tuple[RunningBroker, Path], probes: Any, protocol: int
) -> None:
    """A device and the engine with the CA certificate connect over TLS and a fix goes through."""
    broker, ca = tls_broker
    engine: Probe = probes(
        broker.port, "emguard-engine", broker.passwords["emguard-engine"], tls_ca=ca
    )
    assert engine.accepted, engine.connack
    engine.subscribe("em/dev/+/fix")
    device: Probe = probes(
        broker.port, "AM-1001", broker.passwords["AM-1001"], tls_ca=ca, protocol=protocol
    )
    assert device.accepted, device.connack
    device.publish("em/dev/AM-1001/fix", b'{"v": 1}')
    assert engine.until("em/dev/AM-1001/fix", b'{"v": 1}') == [("em/dev/AM-1001/fix", b'{"v": 1}')]
    assert broker.broker.problems() == []


def test_plain_mqtt_to_the_tls_port_gets_no_connack(tls_broker: tuple[RunningBroker, Path]) -> None:
    """A client speaking plain MQTT to the TLS listener is dropped without a CONNACK."""
    broker, _ = tls_broker
    reply = plain_connect_reply(broker.port)
    assert not reply.startswith(b"\x20"), f"broker answered plain MQTT with a CONNACK: {reply!r}"


def test_plain_paho_client_is_not_accepted_on_the_tls_port(
    tls_broker: tuple[RunningBroker, Path], probes: Any
) -> None:
    """paho without TLS, even with valid credentials, never gets a session on the TLS port."""
    broker, _ = tls_broker
    probe: Probe = probes(broker.port, "AM-1001", broker.passwords["AM-1001"])
    assert not probe.accepted


def test_client_trusting_another_ca_refuses_the_broker(
    tls_broker: tuple[RunningBroker, Path], broker_dir: Path
) -> None:
    """A client pinned to a different CA rejects the broker's certificate (no man in the middle)."""
    broker, _ = tls_broker
    other = make_ca(broker_dir / "other-ca", name="not the emguard CA")
    context = ssl.create_default_context(cafile=str(other.ca_cert))
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            with context.wrap_socket(raw, server_hostname="localhost"):
                pass


def test_broker_certificate_verifies_against_the_ca_for_its_hostname(
    tls_broker: tuple[RunningBroker, Path],
) -> None:
    """Positive control for the test above: the same handshake with the right CA succeeds on TLS >= 1.2."""
    broker, ca = tls_broker
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_tls_does_not_admit_anonymous_clients(
    tls_broker: tuple[RunningBroker, Path], probes: Any
) -> None:
    """Encryption is no substitute for authentication: anonymous TLS clients are refused."""
    broker, ca = tls_broker
    probe: Probe = probes(broker.port, None, None, tls_ca=ca)
    assert not probe.accepted
    assert probe.connack is not None and probe.connack.is_failure


async def test_the_engine_intake_reads_a_burst_over_tls_in_order(
    tls_broker: tuple[RunningBroker, Path], probes: Any
) -> None:
    """IngestClient's buffered reads over an SSLSocket: decrypted bytes paho has not consumed
    yet are invisible to the selector, so a burst must still arrive whole and in order."""
    import asyncio

    from engine.runtime.intake import IngestClient

    broker, ca = tls_broker
    got: list[bytes] = []
    client = IngestClient(
        "127.0.0.1", broker.port, identifier="emguard-engine", username="emguard-engine",
        password=broker.passwords["emguard-engine"],
        tls_context=ssl.create_default_context(cafile=str(ca)),
        sink=lambda topic, payload, mid, qos: got.append(payload),
    )
    async with client:
        await client.subscribe("em/dev/+/fix", qos=1)
        device: Probe = probes(broker.port, "AM-1001", broker.passwords["AM-1001"], tls_ca=ca)
        payloads = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * (i % 300)) for i in range(1500)]
        await asyncio.to_thread(device.publish_many, "em/dev/AM-1001/fix", payloads)
        for _ in range(200):
            if len(got) >= len(payloads):
                break
            await asyncio.sleep(0.05)
    assert got == payloads
