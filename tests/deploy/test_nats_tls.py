"""TLS on NATS's MQTT listener: a real nats-server running the shipped deploy/nats/nats.conf.

The server runs the shipped file itself, as one node on free loopback ports: every rewrite
below (ports, store, the cluster block, R1, the certificate directory) must apply exactly as
often as expected, so a changed deploy file fails here instead of being tested in a form it
no longer has.  The ``mqtt.tls`` block is used verbatim, with a throw-away CA's files where the
deploy mounts deploy/certs/nats-server.crt and .key.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import paho.mqtt.client as mqtt
import pytest
from _deploy_helpers import (
    DEPLOY,
    ORDERS_DOC,
    DevCA,
    Probe,
    free_port,
    make_ca,
    nats_server_binary,
    plain_connect_reply,
    running_nats,
)

from engine.core.orders_load import load_orders
from engine.errors import ConfigError
from engine.tools.deploy_nats import NatsNode, render_server_conf, write_nats_config

pytestmark = pytest.mark.integration

SHIPPED = DEPLOY / "nats" / "nats.conf"
MOUNTED_CERTS = "/etc/nats-certs/"  # where compose.nats.yaml and k8s-nats mount the cert and key
# A minimal MQTT 3.1.1 CONNECT packet (client id "x", clean session, keepalive 30).


def shipped_as_one_node(text: str, *, client: int, mqtt_port: int, http: int, store: Path,
                        certs: Path) -> str:
    """The shipped node config on 127.0.0.1 ports, alone (no routes, R1), certs from ``certs``."""
    text, n = re.subn(r"^cluster \{.*?^\}\n", "", text, flags=re.S | re.M)
    assert n == 1, "the shipped config's cluster block moved"
    for old, new, times in (
        ("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}", 1),
        ("http: 0.0.0.0:8222", f"http: 127.0.0.1:{http}", 1),
        ("store_dir: /data/jetstream", f"store_dir: {json.dumps(str(store))}", 1),
        ("listen: 0.0.0.0:8883", f"listen: 127.0.0.1:{mqtt_port}", 1),
        ("stream_replicas: 3", "stream_replicas: 1", 1),
        (MOUNTED_CERTS, f"{certs}/", 2),
    ):
        assert text.count(old) == times, f"{old!r} is no longer in the shipped config"
        text = text.replace(old, new)
    return text


@dataclass
class TlsServer:
    client_port: int
    mqtt_port: int
    ca: DevCA
    passwords: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    root = tmp_path_factory.mktemp("nats-tls")
    ca = make_ca(root / "certs")  # server.crt, server.key: the names the deploy mounts
    write_nats_config(load_orders(ORDERS_DOC), root)
    passwords = {a["username"]: a["password"]
                 for a in json.loads((root / "credentials.json").read_text())["accounts"]}
    client, mqtt_port = free_port(), free_port()
    assert {client, mqtt_port}.isdisjoint({1883, 4222, 8883})
    config = root / "nats.conf"
    config.write_text(shipped_as_one_node(
        SHIPPED.read_text(), client=client, mqtt_port=mqtt_port, http=free_port(),
        store=root / "js", certs=ca.server_cert.parent,
    ))
    with running_nats(config, mqtt_port, env={"NATS_SERVER_NAME": "tls-1"}):
        yield TlsServer(client, mqtt_port, ca, passwords, root)


def test_a_device_trusting_the_ca_publishes_qos1_over_tls_and_nats_receives_it(
    server: TlsServer, probes: Any
) -> None:
    """An ankle monitor's MQTT 3.1.1 login over TLS; its QoS 1 fix is acknowledged and reaches
    the engine's NATS connection on em.dev.AM-1001.fix."""
    async def run() -> None:
        engine = await nats.connect(
            f"nats://127.0.0.1:{server.client_port}", user="emguard-engine",
            password=server.passwords["emguard-engine"], allow_reconnect=False,
        )
        try:
            sub = await engine.subscribe("em.dev.>")
            await engine.flush()
            device: Probe = await asyncio.to_thread(
                probes, server.mqtt_port, "AM-1001", server.passwords["AM-1001"],
                protocol=mqtt.MQTTv311, tls_ca=server.ca.ca_cert,
            )
            assert device.accepted, device.connack
            tls = device.client.socket()
            assert isinstance(tls, ssl.SSLSocket) and tls.version() in ("TLSv1.2", "TLSv1.3")
            puback = await asyncio.to_thread(device.publish, "em/dev/AM-1001/fix", b'{"v": 1}')
            assert not puback.is_failure
            msg = await sub.next_msg(timeout=5)
            assert (msg.subject, msg.data) == ("em.dev.AM-1001.fix", b'{"v": 1}')
        finally:
            await engine.close()

    asyncio.run(run())


def test_a_client_that_does_not_trust_the_ca_refuses_the_server(
    server: TlsServer, probes: Any
) -> None:
    """A device given another CA (or none: the system store) rejects the certificate: no login
    is sent, so a man in the middle gets no password."""
    other = make_ca(server.root / "other-ca", name="not the emguard CA")
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        probes(server.mqtt_port, "AM-1001", server.passwords["AM-1001"],
               protocol=mqtt.MQTTv311, tls_ca=other.ca_cert)
    for entry in refused.traceback:  # paho 2.2 leaves the failed handshake's socket open
        leftover = entry.frame.f_locals.get("ssl_sock")
        if isinstance(leftover, ssl.SSLSocket):
            leftover.close()
    with socket.create_connection(("127.0.0.1", server.mqtt_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")


def test_plain_mqtt_to_the_tls_port_is_refused(server: TlsServer, probes: Any) -> None:
    """No plain MQTT on 8883: a raw CONNECT gets no CONNACK, and paho without TLS, with a
    valid device password, gets no session."""
    reply = plain_connect_reply(server.mqtt_port)
    assert not reply.startswith(b"\x20"), f"plain MQTT was answered with a CONNACK: {reply!r}"
    plain: Probe = probes(server.mqtt_port, "AM-1001", server.passwords["AM-1001"],
                          protocol=mqtt.MQTTv311)
    assert not plain.accepted


def test_a_generated_node_config_with_mqtt_tls_loads(tmp_path: Path) -> None:
    """``render_server_conf`` with a certificate and key: nats-server accepts it (``-t`` opens
    the key pair); a certificate without its key is refused before any server sees it."""
    ca = make_ca(tmp_path / "certs")
    write_nats_config(load_orders(ORDERS_DOC), tmp_path)
    node = NatsNode("g1", client_listen=f"127.0.0.1:{free_port()}",
                    mqtt_listen=f"127.0.0.1:{free_port()}", cluster_listen=None,
                    store_dir=str(tmp_path / "js"), mqtt_replicas=1,
                    mqtt_cert_file=str(ca.server_cert), mqtt_key_file=str(ca.server_key))
    conf = render_server_conf(node)
    assert f'cert_file: "{ca.server_cert}"' in conf and "timeout: 5.0" in conf
    (tmp_path / "nats.conf").write_text(conf)
    check = subprocess.run([nats_server_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    with pytest.raises(ConfigError, match="key"):
        render_server_conf(NatsNode("g2", mqtt_cert_file=str(ca.server_cert)))
