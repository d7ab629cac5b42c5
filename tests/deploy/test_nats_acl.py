"""The generated NATS users and permissions, enforced by a real nats-server's MQTT listener.

The same rights as the mosquitto ACL (tests/deploy/test_broker_acl.py), written out here from
the rules rather than read back from the generator: a device publishes only its own fixes and
events and reads only its own prompts or warnings; only the engine reads positions; a device's
password does not open a NATS connection.

"Not delivered" is proven without sleeping, as for mosquitto: the server handles one MQTT
client's publishes in order, so once the device's own marker (published after a forbidden
message) reached the engine, the forbidden message would have reached it first.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import paho.mqtt.client as mqtt
import pytest
from _deploy_helpers import ORDERS_DOC, free_port, make_ca, nats_server_binary, running_nats

from engine.core.orders_load import load_orders
from engine.runtime.nats_jetstream import topic_to_subject
from engine.tools.deploy_nats import (
    NatsNode,
    filter_to_subject,
    render_server_conf,
    write_nats_config,
)

pytestmark = pytest.mark.integration

MONITORS = ("AM-1001", "AM-1002")
VICTIM_DEVICES = ("VD-2001", "VD-2002")
PHONE_USER, PHONE_DEVICE = "anna", "PH-2001"
SUBACK_FAILURE = 0x80


@dataclass
class Server:
    """A generated single-node NATS server with its MQTT listener."""

    client_port: int
    mqtt_port: int
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("nats-acl")
    client_port, mqtt_port = free_port(), free_port()
    node = NatsNode(
        server_name="n1",
        client_listen=f"127.0.0.1:{client_port}",
        mqtt_listen=f"127.0.0.1:{mqtt_port}",
        cluster_listen=None,
        store_dir=str(root / "js"),
        mqtt_replicas=1,
    )
    bundle = write_nats_config(load_orders(ORDERS_DOC), root / "out")
    config = bundle.accounts.with_name("nats.conf")
    config.write_text(render_server_conf(node))
    creds = json.loads((root / "out" / "credentials.json").read_text())
    passwords = {a["username"]: a["password"] for a in creds["accounts"]}
    with running_nats(config, mqtt_port) as proc:
        yield Server(client_port, mqtt_port, passwords, proc)


class Device:
    """One MQTT 3.1.1 connection (the NATS listener speaks 3.1.1 only), driven synchronously."""

    def __init__(self, port: int, user: str, password: str | None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user,
                                  protocol=mqtt.MQTTv311)
        if password is not None:
            self.client.username_pw_set(user, password)
        self.connected = threading.Event()
        self.refused: int | None = None
        self.subacks: dict[int, list[int]] = {}
        self.suback_seen = threading.Condition()
        self.received: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.connected.wait(10)

    def _on_connect(self, client, userdata, flags, rc, props=None) -> None:
        if rc.is_failure:
            self.refused = rc.value
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, rcs, props=None) -> None:
        with self.suback_seen:
            self.subacks[mid] = [r.value for r in rcs]
            self.suback_seen.notify_all()

    def subscribe(self, topic: str) -> int:
        """SUBACK code for ``topic`` at QoS 1: 1 granted, 0x80 refused."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self.suback_seen:
            assert self.suback_seen.wait_for(lambda: mid in self.subacks, 10), topic
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1 publish, returning once the server acknowledged it."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _engine(server: Server) -> nats.NATS:
    return await nats.connect(
        f"nats://127.0.0.1:{server.client_port}",
        user="emguard-engine", password=server.passwords["emguard-engine"],
        allow_reconnect=False,
    )


def test_a_device_publishes_only_its_own_fixes_and_the_engine_reads_them(server: Server) -> None:
    async def run() -> None:
        engine = await _engine(server)
        got: list[tuple[str, bytes]] = []
        marker_seen = asyncio.Event()

        async def heard(msg: nats.aio.msg.Msg) -> None:
            got.append((msg.subject, msg.data))
            if msg.data == b"marker":
                marker_seen.set()

        await engine.subscribe("em.dev.>", cb=heard)
        await engine.subscribe("owntracks.>", cb=heard)
        await engine.flush()
        monitor = Device(server.mqtt_port, "AM-1001", server.passwords["AM-1001"])
        try:
            for topic in ("em/dev/AM-1002/fix", "em/dev/VD-2001/fix", "owntracks/anna/phone",
                          "em/alerts/victim/VD-2001", "em/ack"):
                monitor.publish(topic, b"forged")
            monitor.publish("em/dev/AM-1001/event", b"own event")
            monitor.publish("em/dev/AM-1001/fix", b"marker")
            await asyncio.wait_for(marker_seen.wait(), 10)
        finally:
            monitor.close()
            await engine.close()
        assert got == [("em.dev.AM-1001.event", b"own event"), ("em.dev.AM-1001.fix", b"marker")]

    asyncio.run(run())


EXPECTED_READ = {
    **{m: {f"em/cmd/subject/{m}", f"em/cmd/device/{m}"} for m in MONITORS},
    **{v: {f"em/alerts/victim/{v}", f"em/cmd/device/{v}"} for v in VICTIM_DEVICES},
    PHONE_USER: {f"em/alerts/victim/{PHONE_DEVICE}", f"em/cmd/device/{PHONE_DEVICE}"},
    "centre": {"em/alerts/centre", "em/deadletter"},
}
PROBED = sorted({
    "em/dev/AM-1001/fix", "em/dev/#", "owntracks/#", "em/ack", "em/#", "#",
    "em/alerts/victim/+", "em/cmd/subject/+", *(t for ts in EXPECTED_READ.values() for t in ts),
})


@pytest.mark.parametrize("user", sorted(EXPECTED_READ))
def test_each_login_may_subscribe_to_exactly_its_own_topics(server: Server, user: str) -> None:
    device = Device(server.mqtt_port, user, server.passwords[user])
    try:
        assert device.refused is None
        granted = {t for t in PROBED if device.subscribe(t) != SUBACK_FAILURE}
    finally:
        device.close()
    assert granted == EXPECTED_READ[user]


def test_the_offenders_monitor_never_hears_the_victims_warning(server: Server) -> None:
    """The engine publishes a warning to her device and a prompt to his: each hears only its own."""
    async def run() -> None:
        engine = await _engine(server)
        monitor = Device(server.mqtt_port, "AM-1001", server.passwords["AM-1001"])
        victim = Device(server.mqtt_port, "VD-2001", server.passwords["VD-2001"])
        try:
            assert monitor.subscribe("em/cmd/subject/AM-1001") == 1
            assert monitor.subscribe("em/alerts/victim/VD-2001") == SUBACK_FAILURE
            assert victim.subscribe("em/alerts/victim/VD-2001") == 1
            await engine.publish(topic_to_subject("em/alerts/victim/VD-2001"), b"warning")
            await engine.publish(topic_to_subject("em/cmd/subject/AM-1001"), b"prompt")
            await engine.flush()
            for _ in range(200):
                if monitor.received and victim.received:
                    break
                await asyncio.sleep(0.05)
        finally:
            monitor.close()
            victim.close()
            await engine.close()
        assert monitor.received == [("em/cmd/subject/AM-1001", b"prompt")]
        assert victim.received == [("em/alerts/victim/VD-2001", b"warning")]

    asyncio.run(run())


def test_wrong_anonymous_and_non_mqtt_logins_are_refused(server: Server) -> None:
    wrong = Device(server.mqtt_port, "AM-1001", "not-the-password")
    anonymous = Device(server.mqtt_port, "anon-client", None)
    try:
        assert wrong.refused is not None
        assert anonymous.refused is not None
    finally:
        wrong.close()
        anonymous.close()

    # The device's password over the NATS protocol itself (raw, so no client library hides
    # the server's answer): the server must refuse the login, not just limit its subjects.
    with socket.create_connection(("127.0.0.1", server.client_port), timeout=5) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        login = {"user": "AM-1001", "pass": server.passwords["AM-1001"], "verbose": False}
        raw.sendall(b"CONNECT " + json.dumps(login).encode() + b"\r\nPING\r\n")
        answer = reader.readline()
        reader.close()
    assert answer.startswith(b"-ERR 'Authorization Violation'"), answer


def test_topics_become_subjects_as_the_nats_mqtt_listener_maps_them() -> None:
    assert filter_to_subject("em/dev/AM-1001/fix") == "em.dev.AM-1001.fix"
    assert filter_to_subject("em/dev/#") == "em.dev.>"
    assert filter_to_subject("em/alerts/victim/+") == "em.alerts.victim.*"
    assert filter_to_subject("owntracks/anna.b/phone") == "owntracks.anna//b.phone"


def test_a_device_id_with_a_nats_wildcard_is_refused(tmp_path: Path) -> None:
    from engine.errors import ConfigError

    doc = json.loads(json.dumps(ORDERS_DOC))
    doc["subjects"][0]["devices"] = ["AM-*"]
    with pytest.raises(ConfigError, match="wildcard"):
        write_nats_config(load_orders(doc), tmp_path)


def test_the_shipped_node_config_loads_with_generated_accounts(tmp_path: Path) -> None:
    """deploy/nats/nats.conf includes accounts.conf: with a generated one beside it, the server
    accepts the configuration (``-t``: check and exit), names resolved as in compose; the MQTT
    certificate paths (which ``-t`` opens) point at a test CA's files instead of the mounts."""
    shipped = (Path(__file__).parents[2] / "deploy" / "nats" / "nats.conf").read_text()
    assert 'include "accounts.conf"' in shipped and shipped.count("/etc/nats-certs/") == 2
    write_nats_config(load_orders(ORDERS_DOC), tmp_path)
    certs = make_ca(tmp_path / "certs").server_cert.parent  # server.crt, server.key as mounted
    (tmp_path / "nats.conf").write_text(shipped.replace("/etc/nats-certs/", f"{certs}/"))
    check = subprocess.run(
        [nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True, text=True, env={"NATS_SERVER_NAME": "nats-1"}, timeout=30, check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
