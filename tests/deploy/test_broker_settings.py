"""Broker settings that keep fixes from being dropped, and every shipped config started for real.

mosquitto has no config-test flag: a config is valid when mosquitto starts on
it, listens, and logs no error or warning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from _deploy_helpers import (
    DEPLOY,
    Probe,
    RunningBroker,
    free_port,
    hand_to_broker_user,
    make_ca,
    read_passwords,
    run_generated_broker,
)

from engine.core.orders import OrderBook
from engine.tools.deploy_mosquitto import (
    BROKER_SETTINGS,
    CONTAINER_CONFIG_DIR,
    TlsPaths,
    render_container_conf,
    write_mosquitto_config,
)

pytestmark = pytest.mark.integration

ENGINE = "emguard-engine"
ENGINE_PUB = f"{ENGINE}-pub"
SHIPPED_CONF = DEPLOY / "broker" / "mosquitto.conf"


def _engine(
    broker: RunningBroker, probes: Any, client_id: str, user: str = ENGINE, **kw: Any
) -> Probe:
    """The engine's receiving connection (persistent session) as login ``user``.

    The broker makes the username the client id (``use_username_as_clientid``), so
    ``client_id`` is what the engine sends, not the session's name; two workers need two
    logins (``emguard-engine-0``, ``-1``), not two client ids.
    """
    probe: Probe = probes(
        broker.port,
        user,
        broker.passwords[user],
        client_id=client_id,
        session_expiry=3600,
        **kw,
    )
    assert probe.accepted, probe.connack
    return probe


def _device(broker: RunningBroker, probes: Any, device: str = "AM-1001") -> Probe:
    probe: Probe = probes(broker.port, device, broker.passwords[device])
    assert probe.accepted, probe.connack
    return probe


def test_shipped_compose_config_is_the_rendered_one() -> None:
    """deploy/broker/mosquitto.conf is exactly what the generator renders for the container layout."""
    assert SHIPPED_CONF.read_text(encoding="utf-8") == render_container_conf()


def test_shipped_compose_config_starts_on_mosquitto(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """The shipped config, with its container paths mapped into a temp dir, starts, listens on TLS, authenticates."""
    port = free_port()
    text = SHIPPED_CONF.read_text(encoding="utf-8")
    assert re.search(r"^listener 8883$", text, re.M)
    text = text.replace("/mosquitto/", f"{broker_dir}/").replace(
        "listener 8883", f"listener {port} 127.0.0.1"
    )
    config_dir = broker_dir / CONTAINER_CONFIG_DIR.name
    bundle = write_mosquitto_config(book, config_dir, listener_port=port)
    (broker_dir / "data").mkdir()
    ca = make_ca(broker_dir / "certs")
    (config_dir / "mosquitto.conf").write_text(text, encoding="utf-8")
    hand_to_broker_user(broker_dir)
    broker = start_broker(config_dir / "mosquitto.conf", port)
    assert broker.problems() == []
    assert f"Opening ipv4 listen socket on port {port}" in broker.log_text()
    probe: Probe = probes(
        port, ENGINE, read_passwords(bundle.credentials)[ENGINE], tls_ca=ca.ca_cert
    )
    assert probe.accepted, probe.connack


@pytest.mark.parametrize("with_tls", [False, True], ids=["plain", "tls"])
def test_generated_config_starts_without_errors(
    book: OrderBook, broker_dir: Path, start_broker: Any, with_tls: bool
) -> None:
    """Every directive the generator writes is accepted by this mosquitto (no error or warning logged)."""
    tls = None
    if with_tls:
        ca = make_ca(broker_dir / "certs")
        tls = TlsPaths(ca.ca_cert, ca.server_cert, ca.server_key)
    broker = run_generated_broker(book, broker_dir, start_broker, tls=tls)
    conf = broker.bundle.config.read_text(encoding="utf-8")
    for setting in BROKER_SETTINGS:
        assert re.search(rf"^{setting.key} {re.escape(setting.value)}$", conf, re.M), setting.key
    assert broker.broker.problems() == []
    assert "running" in broker.broker.log_text()


def _queue_while_engine_offline(
    broker: RunningBroker, probes: Any, count: int, client_id: str
) -> tuple[list[bytes], Probe]:
    engine = _engine(broker, probes, client_id)
    engine.subscribe("em/dev/+/fix")
    engine.close()  # persistent session stays on the broker, with its subscription
    payloads = [f"fix {i}".encode() for i in range(count)]
    rcs = _device(broker, probes).publish_many("em/dev/AM-1001/fix", payloads)
    assert not any(rc.is_failure for rc in rcs)
    return payloads, engine


QUEUED = 2500  # more than mosquitto's default max_queued_messages (1000)


def test_offline_engine_gets_every_queued_fix_back(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """2,500 QoS 1 fixes published while the engine is offline are all delivered when it returns."""
    broker = run_generated_broker(book, broker_dir, start_broker)
    payloads, _ = _queue_while_engine_offline(broker, probes, QUEUED, "engine-queue")
    engine = _engine(broker, probes, "engine-queue")
    got = engine.received(QUEUED, timeout=30)
    assert [p for _, p in got] == payloads
    assert "dropped" not in broker.broker.log_text()


def test_default_queue_limit_would_drop_fixes(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """Control: without max_queued_messages mosquitto keeps only 1,000 and drops the rest (why we set it)."""
    settings = tuple(s for s in BROKER_SETTINGS if s.key != "max_queued_messages")
    broker = run_generated_broker(book, broker_dir, start_broker, settings=settings)
    _queue_while_engine_offline(broker, probes, QUEUED, "engine-queue")
    engine = _engine(broker, probes, "engine-queue")
    got = engine.received(QUEUED, timeout=3)
    assert len(got) == 1000
    assert "Outgoing messages are being dropped" in broker.broker.log_text()


def test_queued_fixes_survive_a_broker_restart(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """With persistence on, fixes queued for the offline engine are still delivered after the broker restarts."""
    broker = run_generated_broker(book, broker_dir, start_broker)
    payloads, _ = _queue_while_engine_offline(broker, probes, 200, "engine-restart")
    broker.broker.stop()  # SIGTERM: mosquitto writes its persistence file
    broker.broker.start()
    assert (broker.bundle.config.parent / "data" / "mosquitto.db").is_file()
    engine = _engine(broker, probes, "engine-restart")
    assert [p for _, p in engine.received(200, timeout=15)] == payloads


SHARED = "$share/emguard/em/dev/+/fix"
WORKER_A, WORKER_B = f"{ENGINE}-0", f"{ENGINE}-1"  # the generated worker logins


def test_offline_shared_subscriber_strands_its_share_of_fixes(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """mosquitto 2.0 keeps routing to an offline persistent shared subscriber (deploy/README.md: stable client ids)."""
    broker = run_generated_broker(book, broker_dir, start_broker)
    online = _engine(broker, probes, "worker-a", WORKER_A)
    online.subscribe(SHARED)
    gone = _engine(broker, probes, "worker-b", WORKER_B)
    gone.subscribe(SHARED)
    gone.close()
    payloads = [f"fix {i}".encode() for i in range(20)]
    _device(broker, probes).publish_many("em/dev/AM-1001/fix", payloads)
    first = online.received(20, timeout=1.5)
    assert len(first) == 10  # round-robin: the other half waits in worker-b's session
    back = _engine(broker, probes, "worker-b", WORKER_B)
    second = back.received(10, timeout=5)
    assert sorted(p for _, p in first + second) == sorted(payloads)


def test_unsubscribing_before_disconnect_hands_all_fixes_to_the_remaining_worker(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """A worker that leaves the share group before disconnecting strands nothing (graceful shutdown)."""
    broker = run_generated_broker(book, broker_dir, start_broker)
    online = _engine(broker, probes, "worker-a", WORKER_A)
    online.subscribe(SHARED)
    leaving = _engine(broker, probes, "worker-b", WORKER_B)
    leaving.subscribe(SHARED)
    leaving.unsubscribe(SHARED)
    leaving.close()
    payloads = [f"fix {i}".encode() for i in range(20)]
    _device(broker, probes).publish_many("em/dev/AM-1001/fix", payloads)
    assert sorted(p for _, p in online.received(20, timeout=5)) == sorted(payloads)


def _max_packet_size() -> int:
    return int(next(s.value for s in BROKER_SETTINGS if s.key == "max_packet_size"))


def test_engines_largest_message_passes_and_an_oversized_packet_is_refused(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """The engine's publish cap (engine/runtime/outbound.py) fits under max_packet_size on a real broker;
    a packet over max_packet_size is refused and its sender disconnected (why devices must split)."""
    from engine.runtime.outbound import MAX_PUBLISH_BYTES

    limit = _max_packet_size()
    assert MAX_PUBLISH_BYTES + 64 * 1024 <= limit  # room for the topic, properties, header
    broker = run_generated_broker(book, broker_dir, start_broker)
    victim = _device(broker, probes, "VD-2001")
    victim.subscribe("em/alerts/victim/VD-2001")
    publisher: Probe = probes(broker.port, ENGINE_PUB, broker.passwords[ENGINE_PUB])
    assert publisher.accepted, publisher.connack
    biggest = b"x" * MAX_PUBLISH_BYTES
    assert not publisher.publish("em/alerts/victim/VD-2001", biggest).is_failure
    assert victim.received(1, timeout=5) == [("em/alerts/victim/VD-2001", biggest)]
    monitor = _device(broker, probes, "AM-1001")
    monitor.client.publish("em/dev/AM-1001/fix", b"x" * (limit + 1), qos=1)
    assert monitor.disconnected.wait(5), "an oversized packet was accepted"
    assert not victim.disconnected.is_set()
