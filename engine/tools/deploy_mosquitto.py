"""mosquitto's files from the account plan: password file, ACL, broker configuration.

The plan (who may read and write what) is ``engine.tools.deploy_config.plan_accounts``,
shared with the NATS generator; this module renders it in mosquitto's own formats and writes
the bundle ``emguard deploy mosquitto`` produces.  Passwords are hashed in mosquitto 2.x's own
format (``$7$`` PBKDF2-SHA512, 12-byte salt, 64-byte digest), so no mosquitto binary is needed.
Each broker setting is written with the reason it is set (``BROKER_SETTINGS``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

from engine.errors import ConfigError
from engine.tools.deploy_config import (
    CREDENTIALS_FILE,
    DEFAULT_ENGINE_WORKERS,
    SECRETS_DIR,
    MqttAccount,
    new_password,
    plan_accounts,
    read_passwords,
    write_private,
    write_public,
    write_secret,
)

if TYPE_CHECKING:
    from engine.core.orders import OrderBook

MOSQUITTO_HASH_ID = 7  # mosquitto 2.x: PBKDF2-HMAC-SHA512
MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's default; passwords are 256-bit random anyway
SALT_BYTES = 12  # as mosquitto_passwd
ENGINE_ENV_FILE = "engine.env"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
CONFIG_FILE = "mosquitto.conf"
MQTT_PASSWORD_SECRET = "mqtt_password"
MQTT_PUBLISH_PASSWORD_SECRET = "mqtt_publish_password"


@dataclass(frozen=True, slots=True)
class TlsPaths:
    """Certificate files as the broker sees them (host paths, or paths inside a container)."""

    cafile: PurePath
    certfile: PurePath
    keyfile: PurePath

    @classmethod
    def in_dir(cls, directory: PurePath) -> TlsPaths:
        """The conventional names ``ca.crt``, ``server.crt``, ``server.key`` inside ``directory``."""
        return cls(directory / "ca.crt", directory / "server.crt", directory / "server.key")


@dataclass(frozen=True, slots=True)
class MosquittoBundle:
    """The files ``write_mosquitto_config`` wrote."""

    config: Path
    password_file: Path
    acl_file: Path
    credentials: Path  # clear-text passwords, 0600: provisioning only, never mount in the broker
    engine_env: Path  # EMGUARD_MQTT_USERNAME / _PASSWORD / _PUBLISH_PASSWORD, 0600
    mqtt_password: Path  # secrets/mqtt_password: the receiving engine logins' password
    mqtt_publish_password: Path  # secrets/mqtt_publish_password: the "-pub" logins' password
    accounts: tuple[MqttAccount, ...]


@dataclass(frozen=True, slots=True)
class BrokerSetting:
    """One mosquitto directive with the reason it is set (rendered as a comment and in the README)."""

    key: str
    value: str
    why: str
# Settings that keep QoS 1 fixes from being dropped silently (traps.md): mosquitto's
# default queue for an offline or slow client is 1000 messages, after which it
# drops with only a log line.  An engine restart during a burst must not lose fixes.
BROKER_SETTINGS: tuple[BrokerSetting, ...] = (
    BrokerSetting("per_listener_settings", "false", "one password file and ACL for every listener"),
    BrokerSetting("allow_anonymous", "false", "every client authenticates; anonymous is refused"),
    BrokerSetting(
        "max_queued_messages",
        "100000",
        "QoS 1 messages queued per offline/slow client (default 1000, then silent drops)",
    ),
    BrokerSetting(
        "max_queued_bytes",
        "536870912",
        "512 MiB per client: bounds memory, far above 100000 fixes (~300 B each)",
    ),
    BrokerSetting("queue_qos0_messages", "false", "QoS 0 is fire-and-forget; never queue it"),
    BrokerSetting(
        "max_inflight_messages",
        "100",
        "unacknowledged QoS 1 messages per client in flight (default 20) for engine throughput",
    ),
    BrokerSetting(
        "max_packet_size",
        "1048576",
        "1 MiB: the engine's largest message (capped at 256 KiB, engine/runtime/outbound.py) and a "
        "device's buffered burst fit; a larger packet is refused and its sender disconnected",
    ),
    BrokerSetting("persistence", "true", "queued messages and sessions survive a broker restart"),
    BrokerSetting(
        "autosave_interval",
        "30",
        "seconds between persistence snapshots (default 1800): bounds loss on a broker crash",
    ),
    BrokerSetting(
        "persistent_client_expiration",
        "14d",
        "a persistent session (and its queue) survives 14 days offline, then is freed",
    ),
    BrokerSetting("set_tcp_nodelay", "true", "no Nagle delay on alerts and prompts"),
    BrokerSetting("connection_messages", "true", "log connects and disconnects (no passwords)"),
)
# Settings mosquitto 2.0 keeps per listener (whatever per_listener_settings says): written after
# each ``listener`` line.  Written before the first one they configure an implicit default
# listener, and mosquitto then also opens port 1883 on every interface (seen here: it did).
LISTENER_SETTINGS: tuple[BrokerSetting, ...] = (
    BrokerSetting(
        "use_username_as_clientid",
        "true",
        "a client's id is its username: no login can take over (and disconnect) "
        "the engine's or another device's connection by sending its client id",
    ),
)


def hash_password(
    password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None
) -> str:
    """A mosquitto 2.x password-file hash: ``$7$iterations$salt_b64$sha512_pbkdf2_b64``."""
    if iterations < 1:
        raise ConfigError("password hash iterations must be >= 1")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"${MOSQUITTO_HASH_ID}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (constant-time comparison)."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != str(MOSQUITTO_HASH_ID):
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


def render_acl(accounts: Iterable[MqttAccount]) -> str:
    """The mosquitto ``acl_file``: one ``user`` block per account, no patterns, no anonymous rules."""
    lines = [
        "# Generated by `emguard deploy mosquitto` from the orders; do not edit by hand.",
        "# No lines before the first 'user' line: anonymous clients get no rights at all.",
        "# No 'pattern' lines: a user's rights are exactly the topics listed under it.",
    ]
    for a in accounts:
        lines += ["", f"# {a.role}" + (f" {a.device}" if a.device else ""), f"user {a.username}"]
        lines += [f"topic read {t}" for t in a.read]
        lines += [f"topic write {t}" for t in a.write]
    return "\n".join(lines) + "\n"


def render_password_file(entries: Iterable[tuple[str, str]]) -> str:
    """The mosquitto ``password_file`` from (username, already-hashed password) pairs."""
    return "".join(f"{user}:{hashed}\n" for user, hashed in entries)


def render_mosquitto_conf(
    *,
    config_dir: PurePath,
    data_dir: PurePath,
    tls: TlsPaths | None,
    listener_port: int = 8883,
    listener_bind: str | None = None,
    settings: Iterable[BrokerSetting] = BROKER_SETTINGS,
    listener_settings: Iterable[BrokerSetting] = LISTENER_SETTINGS,
) -> str:
    """A complete mosquitto 2.x configuration; paths are absolute as the broker sees them."""
    if not 0 < listener_port < 65536:
        raise ConfigError(f"listener port {listener_port} is not a TCP port")
    lines = [
        "# emguard broker configuration (mosquitto 2.x), generated by engine.tools.deploy_mosquitto.",
        "# Why each setting: deploy/README.md, section 'Broker settings'.",
        "",
        f"password_file {config_dir / PASSWORD_FILE}",
        f"acl_file {config_dir / ACL_FILE}",
        f"persistence_location {str(data_dir).rstrip('/')}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "",
    ]
    for s in settings:
        lines += [f"# {s.why}", f"{s.key} {s.value}"]
    lines += ["", f"listener {listener_port}" + (f" {listener_bind}" if listener_bind else "")]
    for s in listener_settings:
        lines += [f"# {s.why}", f"{s.key} {s.value}"]
    if tls is None:
        lines.append("# WARNING: no TLS on this listener; use only on a loopback or test network.")
    else:
        lines += [
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "tls_version tlsv1.2",
            "require_certificate false",
        ]
    return "\n".join(lines) + "\n"
# The layout inside the eclipse-mosquitto container used by deploy/compose.yaml.
CONTAINER_CONFIG_DIR = PurePosixPath("/mosquitto/config")
CONTAINER_DATA_DIR = PurePosixPath("/mosquitto/data")
CONTAINER_CERTS_DIR = PurePosixPath("/mosquitto/certs")


def render_container_conf(listener_port: int = 8883) -> str:
    """deploy/broker/mosquitto.conf: TLS-only broker with the compose mounts' container paths."""
    return render_mosquitto_conf(
        config_dir=CONTAINER_CONFIG_DIR,
        data_dir=CONTAINER_DATA_DIR,
        tls=TlsPaths.in_dir(CONTAINER_CERTS_DIR),
        listener_port=listener_port,
    )


def write_mosquitto_config(
    book: OrderBook,
    out_dir: Path,
    *,
    engine_user: str = "emguard-engine",
    centre_user: str = "centre",
    tls: TlsPaths | None = None,
    listener_port: int = 8883,
    registry_path: Path | None = None,
    topic_prefix: str = "em",
    config_dir: PurePath | None = None,
    data_dir: PurePath | None = None,
    listener_bind: str | None = None,
    rotate: bool = False,
    iterations: int = MOSQUITTO_ITERATIONS,
    settings: Iterable[BrokerSetting] = BROKER_SETTINGS,
    engine_workers: int = DEFAULT_ENGINE_WORKERS,
    listener_settings: Iterable[BrokerSetting] = LISTENER_SETTINGS,
) -> MosquittoBundle:
    """Write passwd, acl, mosquitto.conf, credentials.json, engine.env and secrets/ into ``out_dir``.

    ``engine.env`` and ``secrets/`` carry the engine's two passwords:
    ``EMGUARD_MQTT_PASSWORD`` for the receiving logins (``<engine_user>``,
    ``<engine_user>-<n>``) and ``EMGUARD_MQTT_PUBLISH_PASSWORD`` for the
    publishing ones (``...-pub``).  ``secrets/`` is 0700 with one 0444 file per
    password, so compose can mount each file into a container whose user is not
    the file's owner while nobody else on the host can reach it.

    ``config_dir`` / ``data_dir`` are where the broker will see ``out_dir`` and its
    persistence directory (defaults: ``out_dir`` and ``out_dir/data`` on this host).
    Existing passwords in ``out_dir/credentials.json`` are kept unless ``rotate``.
    """
    from devices.registry import DeviceRegistry

    registry = DeviceRegistry.from_orders(book, registry_path)
    for key, device in sorted(book.owntracks.items()):
        info = registry.get(device)
        if info is None or info.role != "victim_phone" or info.owntracks != key:
            raise ConfigError(
                f"OwnTracks mapping {key!r} -> {device!r} in the orders is not a protected person's "
                "phone in the registry; it would get no broker login (fix the orders or registry)"
            )
    accounts = plan_accounts(
        registry,
        engine_user=engine_user,
        centre_user=centre_user,
        topic_prefix=topic_prefix,
        engine_workers=engine_workers,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir.resolve()
    creds_path = out / CREDENTIALS_FILE
    old = {} if rotate else read_passwords(creds_path)
    passwords: dict[str, str] = {}
    for a in accounts:  # an account sharing a password comes after the one it shares it with
        shared = passwords.get(a.password_of) if a.password_of else None
        passwords[a.username] = shared or old.get(a.username) or new_password()

    credentials = {
        "v": 1,
        "note": "Broker passwords in clear text for provisioning devices. Keep secret; never mount in the broker.",
        "accounts": [
            {
                "username": a.username,
                "password": passwords[a.username],
                "role": a.role,
                "device": a.device,
                "publish": list(a.write),
                "subscribe": list(a.read),
            }
            for a in accounts
        ],
    }
    write_private(creds_path, json.dumps(credentials, indent=2) + "\n")
    engine, publisher = accounts[0], accounts[1]
    write_private(
        out / ENGINE_ENV_FILE,
        f"EMGUARD_MQTT_USERNAME={engine.username}\n"
        f"EMGUARD_MQTT_PASSWORD={passwords[engine.username]}\n"
        f"EMGUARD_MQTT_PUBLISH_PASSWORD={passwords[publisher.username]}\n",
    )
    secrets_dir = out / SECRETS_DIR
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    secrets_dir.chmod(0o700)
    write_secret(secrets_dir / MQTT_PASSWORD_SECRET, passwords[engine.username])
    write_secret(secrets_dir / MQTT_PUBLISH_PASSWORD_SECRET, passwords[publisher.username])
    hashed = (
        (a.username, hash_password(passwords[a.username], iterations=iterations)) for a in accounts
    )
    # Hashes only, but still nobody else's business; mosquitto reads it at start as root or its own user.
    write_private(out / PASSWORD_FILE, render_password_file(hashed))
    write_public(out / ACL_FILE, render_acl(accounts))
    if data_dir is None:
        (out / "data").mkdir(exist_ok=True)
    conf = render_mosquitto_conf(
        config_dir=config_dir if config_dir is not None else out,
        data_dir=data_dir if data_dir is not None else out / "data",
        tls=tls,
        listener_port=listener_port,
        listener_bind=listener_bind,
        settings=settings,
        listener_settings=listener_settings,
    )
    write_public(out / CONFIG_FILE, conf)
    return MosquittoBundle(
        config=out / CONFIG_FILE,
        password_file=out / PASSWORD_FILE,
        acl_file=out / ACL_FILE,
        credentials=creds_path,
        engine_env=out / ENGINE_ENV_FILE,
        mqtt_password=secrets_dir / MQTT_PASSWORD_SECRET,
        mqtt_publish_password=secrets_dir / MQTT_PUBLISH_PASSWORD_SECRET,
        accounts=accounts,
    )


def main_mosquitto(
    orders: Path,
    out: Path,
    registry: Path | None,
    tls_dir: Path | None,
    *,
    listener_port: int = 8883,
    config_dir: str | None = None,
    data_dir: str | None = None,
    certs_dir: str | None = None,
    rotate: bool = False,
    engine_workers: int = DEFAULT_ENGINE_WORKERS,
) -> int:
    """``emguard deploy mosquitto``: generate the bundle, print a summary without secrets, exit code.

    ``tls_dir`` holds ``ca.crt``, ``server.crt``, ``server.key`` on this host;
    ``config_dir`` / ``data_dir`` / ``certs_dir`` are the paths the broker will
    see (e.g. ``/mosquitto/config`` in a container); by default this host's.
    """
    from devices.errors import DeviceError
    from engine.core.orders_load import load_orders
    from engine.errors import EngineError

    try:
        book = load_orders(orders)
        tls = None
        if tls_dir is not None:
            missing = [
                str(tls_dir / name)
                for name in ("ca.crt", "server.crt", "server.key")
                if not (tls_dir / name).is_file()
            ]
            if missing:
                raise ConfigError(f"TLS files not found: {', '.join(missing)}")
            tls = TlsPaths.in_dir(PurePath(certs_dir) if certs_dir else tls_dir.resolve())
        bundle = write_mosquitto_config(
            book,
            out,
            tls=tls,
            registry_path=registry,
            listener_port=listener_port,
            config_dir=PurePath(config_dir) if config_dir else None,
            data_dir=PurePath(data_dir) if data_dir else None,
            rotate=rotate,
            engine_workers=engine_workers,
        )
    except (EngineError, DeviceError, OSError) as exc:
        print(f"emguard deploy mosquitto: {exc}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for a in bundle.accounts:
        counts[a.role] = counts.get(a.role, 0) + 1
    summary = ", ".join(f"{n} {role}" for role, n in sorted(counts.items()))
    print(f"wrote {bundle.config}, {bundle.password_file.name}, {bundle.acl_file.name} ({summary})")
    print(
        f"passwords (do not commit): {bundle.credentials}, {bundle.engine_env}, "
        f"{bundle.mqtt_password.parent}/"
    )
    if tls is None:
        print(
            "warning: no --tls-dir given; the listener is plain TCP (tests/loopback only)",
            file=sys.stderr,
        )
    return 0
