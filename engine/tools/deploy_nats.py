"""NATS users, subject permissions and server settings generated from the orders.

When several workers run, a NATS cluster is also the devices' MQTT broker (its built-in MQTT
3.1.1 listener).  The rights are the same as for mosquitto (``engine.tools.deploy_config``:
one plan, ``plan_accounts``, for both brokers): a device publishes only its own fixes and
events and reads only its own prompts or warnings; only the engine reads positions; an
offender's monitor can never read a victim's warnings.

NATS writes permissions against subjects, not topics.  Its MQTT listener turns a topic into a
subject by replacing ``/`` with ``.`` and ``.`` with ``//`` (``em/dev/AM-1/fix`` is
``em.dev.AM-1.fix``); a filter's ``+`` becomes ``*`` and ``#`` becomes ``>``.  Because ``*`` and
``>`` are wildcards in a permission, a device id containing either is refused here: it would
give the device every subject the wildcard matches.

Every device login is restricted to MQTT connections (``allowed_connection_types``): with a
NATS client connection, the same password would reach the JetStream API.  The engine's login
is a NATS (``STANDARD``) connection with the whole account: it runs the streams, consumers
and key-value buckets, and is the one trusted party.  The centre may use MQTT or NATS.

Passwords are random (256 bits, as for mosquitto) and stored as bcrypt hashes.  The cost is
the minimum (4): a hash's cost only slows guessing a *weak* password, these cannot be guessed,
and every device reconnecting after a network outage makes the servers verify one hash each
(250,000 ankle monitors at cost 11 would be hours of CPU at the worst moment).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from devices.registry import DeviceRegistry
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.errors import ConfigError, EngineError
from engine.runtime.nats_jetstream import topic_to_subject
from engine.tools.deploy_config import (
    CREDENTIALS_FILE,
    SECRETS_DIR,
    Role,
    new_password,
    plan_accounts,
    read_passwords,
    write_private,
    write_public,
    write_secret,
)

BCRYPT_COST = 4
ACCOUNTS_FILE = "accounts.conf"
NATS_ENGINE_ENV_FILE = "engine-nats.env"
NATS_PASSWORD_SECRET = "nats_password"
ACCOUNT = "EMGUARD"  # devices, centre and engine share one account: one set of subjects
SYSTEM_ACCOUNT = "SYS"
DEFAULT_CLUSTER = "emguard"
MQTT_TLS_TIMEOUT_S = 5.0  # TLS handshake limit (NATS: 2 s); why in deploy/nats/nats.conf


@dataclass(frozen=True, slots=True)
class NatsUser:
    """One NATS login: what it may publish and subscribe to, and over which connections."""

    username: str
    role: Role
    device: str | None
    publish: tuple[str, ...]  # subjects; empty with ``everything`` means all
    subscribe: tuple[str, ...]
    connection_types: tuple[str, ...]
    everything: bool = False  # the engine: the whole account


@dataclass(frozen=True, slots=True)
class NatsNode:
    """Where one server listens and which servers it routes to (tests and one-off servers).

    The shipped deploy (deploy/nats/nats.conf) is one file for every node instead, named by
    ``$NATS_SERVER_NAME``, with MQTT over TLS on 8883; both include the generated
    ``accounts.conf``.  ``mqtt_cert_file`` and ``mqtt_key_file`` (PEM paths as the server sees
    them) put the MQTT listener behind TLS the same way; without them it is plain.
    """

    server_name: str
    client_listen: str = "0.0.0.0:4222"
    mqtt_listen: str = "0.0.0.0:1883"
    cluster_listen: str | None = "0.0.0.0:6222"
    routes: tuple[str, ...] = ()
    store_dir: str = "/data/jetstream"
    cluster_name: str = DEFAULT_CLUSTER
    mqtt_replicas: int = 3  # MQTT sessions and in-flight QoS 1 messages, replicated like the data
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    mqtt_tls_timeout_s: float = MQTT_TLS_TIMEOUT_S


def filter_to_subject(topic: str) -> str:
    """The subject NATS's MQTT listener uses for a topic filter (``+`` -> ``*``, ``#`` -> ``>``)."""
    if "*" in topic or ">" in topic:
        raise ConfigError(f"topic {topic!r} contains '*' or '>', which are wildcards in NATS")
    wildcards = {"#": ">", "+": "*"}
    return ".".join(wildcards.get(level) or topic_to_subject(level) for level in topic.split("/"))


def plan_nats_users(
    registry: DeviceRegistry,
    *,
    engine_user: str = "emguard-engine",
    centre_user: str = "centre",
    topic_prefix: str = "em",
) -> tuple[NatsUser, ...]:
    """Every NATS login: the engine (whole account), the centre, and one per device or phone."""
    users: list[NatsUser] = []
    for account in plan_accounts(
        registry, engine_user=engine_user, centre_user=centre_user,
        topic_prefix=topic_prefix, engine_workers=0,
    ):
        if account.role == "engine_publisher":
            continue  # one NATS connection publishes and receives: no second login needed
        if account.role == "engine":
            users.append(NatsUser(account.username, "engine", None, (), (), ("STANDARD",), True))
            continue
        kinds = ("STANDARD", "MQTT") if account.role == "centre" else ("MQTT",)
        users.append(NatsUser(
            username=account.username,
            role=account.role,
            device=account.device,
            publish=tuple(filter_to_subject(t) for t in account.write),
            subscribe=tuple(filter_to_subject(t) for t in account.read),
            connection_types=kinds,
        ))
    return tuple(users)


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash NATS accepts in place of the password (see the module docstring on cost)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def _quoted(values: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def render_users(users: Iterable[NatsUser], hashes: Mapping[str, str]) -> str:
    """The ``users`` list of the emguard account, one block per login, rights spelled out."""
    lines = []
    for u in users:
        lines.append(f"      # {u.role}" + (f" {u.device}" if u.device else ""))
        lines.append("      {")
        lines.append(f"        user: {json.dumps(u.username)}")
        lines.append(f"        password: {json.dumps(hashes[u.username])}")
        lines.append(f"        allowed_connection_types: {_quoted(u.connection_types)}")
        if not u.everything:
            lines.append("        permissions: {")
            lines.append(f"          publish: {{ allow: {_quoted(u.publish)} }}")
            lines.append(f"          subscribe: {{ allow: {_quoted(u.subscribe)} }}")
            lines.append("        }")
        lines.append("      }")
    return "\n".join(lines)


def render_accounts(users: Iterable[NatsUser], hashes: Mapping[str, str], system_hash: str) -> str:
    """``accounts.conf``: the emguard account with every login, and the system account."""
    return "\n".join([
        "# Generated by `emguard deploy nats` from the orders; do not edit by hand.",
        "# Every device may publish only its own subjects and read only its own prompts or",
        "# warnings; anonymous connections are refused (no no_auth_user).",
        "accounts {",
        f"  {ACCOUNT}: {{",
        "    jetstream: enabled",
        "    users: [",
        render_users(users, hashes),
        "    ]",
        "  }",
        f"  {SYSTEM_ACCOUNT}: {{",
        f"    users: [ {{ user: \"sys\", password: {json.dumps(system_hash)},"
        " allowed_connection_types: [\"STANDARD\"] } ]",
        "  }",
        "}",
        f"system_account: {SYSTEM_ACCOUNT}",
    ]) + "\n"


def render_server_conf(node: NatsNode, accounts: str = ACCOUNTS_FILE) -> str:
    """A complete server configuration for one node, including ``accounts``.

    NATS resolves an include relative to the including file (an absolute path too), so the
    configuration belongs in the same directory as ``accounts.conf``.
    """
    if (node.mqtt_cert_file is None) != (node.mqtt_key_file is None):
        raise ConfigError("MQTT TLS needs both a certificate and a key file")
    tls = ""
    if node.mqtt_cert_file is not None:
        tls = (f", tls {{ cert_file: {json.dumps(node.mqtt_cert_file)},"
               f" key_file: {json.dumps(node.mqtt_key_file)}, timeout: {node.mqtt_tls_timeout_s} }}")
    lines = [
        f"server_name: {json.dumps(node.server_name)}",
        f"listen: {json.dumps(node.client_listen)}",
        f"jetstream {{ store_dir: {json.dumps(node.store_dir)} }}",
        f"mqtt {{ listen: {json.dumps(node.mqtt_listen)}, stream_replicas: {node.mqtt_replicas}{tls} }}",
    ]
    if node.cluster_listen is not None:
        lines.append(
            f"cluster {{ name: {json.dumps(node.cluster_name)}, listen: {json.dumps(node.cluster_listen)},"
            f" routes: {_quoted(node.routes)} }}"
        )
    lines.append(f"include {json.dumps(accounts)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class NatsBundle:
    """The files ``write_nats_config`` wrote."""

    accounts: Path  # accounts.conf, included by every node's configuration
    credentials: Path  # clear-text passwords, 0600: provisioning only
    engine_env: Path  # EMGUARD_NATS_USERNAME / EMGUARD_NATS_PASSWORD, 0600
    engine_password: Path  # secrets/nats_password (0444 in a 0700 directory), for compose and k8s
    users: tuple[NatsUser, ...]


def write_nats_config(
    book: OrderBook,
    out_dir: Path,
    *,
    registry_path: Path | None = None,
    engine_user: str = "emguard-engine",
    centre_user: str = "centre",
    rotate: bool = False,
) -> NatsBundle:
    """Write ``accounts.conf``, ``credentials.json``, ``engine-nats.env`` and ``secrets/``.

    Passwords already in ``out_dir/credentials.json`` are kept unless ``rotate``, so adding an
    order does not lock provisioned devices out.
    """
    registry = DeviceRegistry.from_orders(book, registry_path)
    users = plan_nats_users(registry, engine_user=engine_user, centre_user=centre_user)
    for u in users:
        if any(c in u.username for c in "*>") or u.username == "sys":
            raise ConfigError(f"login {u.username!r} cannot be a NATS user (wildcard or reserved)")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir.resolve()
    old = {} if rotate else read_passwords(out / CREDENTIALS_FILE)
    passwords = {u.username: old.get(u.username) or new_password() for u in users}
    system_password = old.get("sys") or new_password()
    write_private(out / CREDENTIALS_FILE, json.dumps({
        "v": 1,
        "note": "NATS passwords in clear text for provisioning devices. Keep secret; never mount in a server.",
        "accounts": [
            {"username": u.username, "password": passwords[u.username], "role": u.role,
             "device": u.device, "publish": list(u.publish), "subscribe": list(u.subscribe)}
            for u in users
        ] + [{"username": "sys", "password": system_password, "role": "system", "device": None,
              "publish": [], "subscribe": []}],
    }, indent=2) + "\n")
    engine = next(u for u in users if u.role == "engine")
    write_private(
        out / NATS_ENGINE_ENV_FILE,
        f"EMGUARD_NATS_USERNAME={engine.username}\nEMGUARD_NATS_PASSWORD={passwords[engine.username]}\n",
    )
    secrets_dir = out / SECRETS_DIR
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    secrets_dir.chmod(0o700)
    write_secret(secrets_dir / NATS_PASSWORD_SECRET, passwords[engine.username])
    hashes = {name: hash_password(pw) for name, pw in passwords.items()}
    write_public(out / ACCOUNTS_FILE, render_accounts(users, hashes, hash_password(system_password)))
    return NatsBundle(
        accounts=out / ACCOUNTS_FILE,
        credentials=out / CREDENTIALS_FILE,
        engine_env=out / NATS_ENGINE_ENV_FILE,
        engine_password=secrets_dir / NATS_PASSWORD_SECRET,
        users=users,
    )


def main_nats(orders: Path, out: Path, registry: Path | None, rotate: bool = False) -> int:
    """``emguard deploy nats``: write the bundle, print a summary without secrets."""
    try:
        bundle = write_nats_config(load_orders(orders), out, registry_path=registry, rotate=rotate)
    except EngineError as exc:
        print(f"emguard deploy nats: {exc}", file=sys.stderr)
        return 2
    devices = sum(u.device is not None for u in bundle.users)
    print(f"wrote {ACCOUNTS_FILE}, {CREDENTIALS_FILE}, {NATS_ENGINE_ENV_FILE} and "
          f"{SECRETS_DIR}/{NATS_PASSWORD_SECRET} for {len(bundle.users)} logins ({devices} devices) "
          f"in {out}")
    print("devices connect over TLS (MQTT, port 8883): the nodes need the certificate and key "
          "deploy/certs/nats-server.crt and nats-server.key (deploy/README.md, section 1)")
    return 0
