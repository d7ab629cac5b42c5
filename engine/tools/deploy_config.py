"""Broker accounts and their topic rights, planned from the orders (mosquitto and NATS alike).

Why generated: the broker is the first line of victim privacy.  A device may
publish only under its own id (the engine trusts the topic as the sender's
identity), a victim device may read only its own warnings, an ankle monitor
only its own prompts, and nobody but the engine may read positions.  Writing
those rules by hand for hundreds of devices is how a typo ends up giving an
offender's monitor ``em/alerts/victim/#``; generating them from the same
orders the engine enforces keeps the two in step.

Every account gets explicit per-user ``topic`` lines and no ``pattern`` lines:
a pattern applies to *every* authenticated user (engine, centre, phones), so
its effect depends on how usernames happen to collide with topic segments.
Explicit lines make a user's rights exactly what is printed under its name.

Every login is bound to its own client id (``use_username_as_clientid``): a
client's id *is* its username, whatever it sends in CONNECT.  Without that, any
device could connect with the engine's client id (or a victim device's) and
mosquitto would close the older connection with that id: one ankle monitor
could knock the engine, or the victim's warnings, off the broker.  The
dynamic-security plugin can pin one client id per login too, but it would make
every device send exactly that id (a change to provisioned firmware), needs a
plugin path that differs between builds and keeps its rules in a JSON file
changed at run time; this generator's files are static and reviewable.

The consequence: one login can hold one connection.  The engine opens two (it
receives on one and publishes alerts on the other, so a PUBACK for an alarm
never waits behind device traffic), so it gets two accounts, ``<engine>`` (read
only) and ``<engine>-pub`` (write only), with separate passwords.  Several
workers sharing the device load (``EMGUARD_SHARED_GROUP``) each need their own
pair, ``<engine>-<n>`` and ``<engine>-<n>-pub``: worker n logs in as
``<engine>-<n>``, which is also its client id and so names its persistent
session (the StatefulSet's pod name, compose's ``engine-<n>``).  Worker accounts
share the role's password (the receiving one or the publishing one): they are
interchangeable, and a Kubernetes pod cannot pick a per-pod key out of a Secret.

Passwords are random (``secrets``), hashed in mosquitto 2.x's own format
(``$7$`` PBKDF2-SHA512, 12-byte salt, 64-byte digest) so no mosquitto binary is
needed, and written in clear only to ``credentials.json`` (mode 0600) for
provisioning devices.  They are never logged.  Re-running the generator keeps
the passwords already in ``credentials.json`` so adding an order does not lock
every provisioned ankle monitor out of the broker; ``rotate=True`` replaces them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engine.errors import ConfigError

if TYPE_CHECKING:
    from devices.registry import DeviceInfo, DeviceRegistry

Role = Literal[
    "engine", "engine_publisher", "centre", "ankle_monitor", "victim_device", "victim_phone"
]

PASSWORD_BYTES = 32  # secrets.token_urlsafe(32): 256 bits, 43 characters

CREDENTIALS_FILE = "credentials.json"
# engine passwords one per file, for compose `secrets:` / kubectl --from-file
SECRETS_DIR = "secrets"

PUBLISH_SUFFIX = "-pub"  # the engine's publishing login: "<engine user>-pub" (engine/runtime/service.py)
# Worker logins "<engine user>-0" .. "-7": the StatefulSet's pod names up to the HPA's maxReplicas
# (deploy/k8s/hpa.yaml) and compose's engine-0 / engine-1.  A worker beyond them is refused at
# connect and never becomes ready (/readyz), which the EmguardWorkerNotReady alert reports.
DEFAULT_ENGINE_WORKERS = 8

# A username / device id that goes into an ACL topic line or the password file must
# not be a wildcard, a level separator, the password-file separator, whitespace
# or a control character, and must not start with '$' (reserved topics).
_FORBIDDEN = re.compile(r"[+#/:\s\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class MqttAccount:
    """One broker login and exactly the topics it may read and write."""

    username: str
    role: Role
    device: str | None  # the engine's device id (None for engine / centre)
    read: tuple[str, ...]
    write: tuple[str, ...]
    # The account whose password this one shares (engine worker accounts), None: its own.
    password_of: str | None = None


# --------------------------------------------------------------------------- passwords


def new_password() -> str:
    """A fresh random broker password (256 bits, URL-safe: survives .env files and shells)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


# --------------------------------------------------------------------------- accounts


def check_name(name: str, what: str) -> str:
    """``name`` unchanged if it is safe as a username and a literal topic level, else ConfigError."""
    if not name or name.startswith("$") or _FORBIDDEN.search(name):
        raise ConfigError(
            f"{what} {name!r} cannot be used as a broker username or topic level: "
            "it must be non-empty, not start with '$', and contain no '+', '#', '/', ':', "
            "whitespace or control characters"
        )
    return name


def plan_accounts(
    registry: DeviceRegistry,
    *,
    engine_user: str = "emguard-engine",
    centre_user: str = "centre",
    topic_prefix: str = "em",
    owntracks_prefix: str = "owntracks",
    engine_workers: int = DEFAULT_ENGINE_WORKERS,
) -> tuple[MqttAccount, ...]:
    """Every broker account with its topic rights, in a stable order (engine, centre, devices).

    The engine gets a receiving and a publishing login (``<engine_user>`` and
    ``<engine_user>-pub``), and so does each of ``engine_workers`` workers
    (``<engine_user>-<n>``, ``<engine_user>-<n>-pub``, sharing the first pair's
    passwords): with ``use_username_as_clientid`` a login holds one connection.
    A native device logs in as its device id.  A victim phone with an OwnTracks
    login logs in as the OwnTracks ``user`` (the app puts its username in the
    topic) and may publish only ``owntracks/{user}/{device}`` of its own mapping.
    """
    p = check_name(topic_prefix, "topic prefix")
    ot = check_name(owntracks_prefix, "OwnTracks prefix")
    if engine_workers < 0:
        raise ConfigError(f"engine workers must be >= 0, got {engine_workers}")
    check_name(engine_user, "engine user")
    accounts = [
        *engine_accounts(engine_user, topic_prefix=p, owntracks_prefix=ot),
        *(
            a
            for n in range(engine_workers)
            for a in engine_accounts(
                f"{engine_user}-{n}", topic_prefix=p, owntracks_prefix=ot, password_of=engine_user
            )
        ),
        MqttAccount(
            check_name(centre_user, "centre user"),
            "centre",
            None,
            read=(f"{p}/alerts/centre", f"{p}/deadletter"),
            write=(f"{p}/ack",),
        ),
    ]
    phones: dict[str, list[DeviceInfo]] = {}  # OwnTracks user -> its phones
    for info in registry.devices():
        d = check_name(info.device_id, "device id")
        own_cmd = f"{p}/cmd/device/{d}"
        if info.role == "victim_phone" and info.owntracks is not None:
            user, _, ot_device = info.owntracks.partition("/")
            check_name(user, f"OwnTracks user of {d}")
            check_name(ot_device, f"OwnTracks device of {d}")
            phones.setdefault(user, []).append(info)
            continue
        # Prompts to an offender's monitor, warnings to a victim's device: never the other way.
        inbox = f"{p}/cmd/subject/{d}" if info.role == "ankle_monitor" else f"{p}/alerts/victim/{d}"
        native = (f"{p}/dev/{d}/fix", f"{p}/dev/{d}/event")
        accounts.append(MqttAccount(d, info.role, d, (inbox, own_cmd), native))

    for user, infos in sorted(phones.items()):
        owners = sorted({i.owner for i in infos})
        if len(owners) > 1:
            raise ConfigError(
                f"OwnTracks user {user!r} carries phones of different protected persons {owners}: "
                "one broker login may belong to only one person"
            )
        if len(infos) > 1:
            # use_username_as_clientid: two phones on one login would keep disconnecting each
            # other, and a warning would reach whichever happened to be connected.
            raise ConfigError(
                f"OwnTracks user {user!r} carries {len(infos)} phones "
                f"({', '.join(sorted(i.device_id for i in infos))}): one login holds one "
                "connection, so give each phone its own OwnTracks user"
            )
        read = tuple(
            t
            for i in infos
            for t in (f"{p}/alerts/victim/{i.device_id}", f"{p}/cmd/device/{i.device_id}")
        )
        write = tuple(f"{ot}/{i.owntracks}" for i in infos)
        accounts.append(MqttAccount(user, "victim_phone", infos[0].device_id, read, write))

    seen: set[str] = set()
    for account in accounts:
        if account.username in seen:
            raise ConfigError(
                f"broker username {account.username!r} is used twice (device ids, OwnTracks users, "
                "engine and centre users must all differ)"
            )
        seen.add(account.username)
    return tuple(accounts)


def engine_accounts(
    username: str,
    *,
    topic_prefix: str = "em",
    owntracks_prefix: str = "owntracks",
    password_of: str | None = None,
) -> tuple[MqttAccount, MqttAccount]:
    """The receiving login ``username`` and the publishing login ``username-pub`` of one engine.

    The receiving connection reads device traffic and acknowledgements and
    publishes nothing; everything the engine sends (centre alerts, victim
    warnings, offender prompts, device commands, dead letters:
    engine/core/messages.py) goes through the outbox's publishing connection, which
    reads nothing.
    """
    p, ot = topic_prefix, owntracks_prefix
    pub = check_name(username + PUBLISH_SUFFIX, "engine publishing user")
    return (
        MqttAccount(
            check_name(username, "engine user"),
            "engine",
            None,
            read=(f"{p}/dev/#", f"{ot}/#", f"{p}/ack"),
            write=(),
            password_of=password_of,
        ),
        MqttAccount(
            pub,
            "engine_publisher",
            None,
            read=(),
            write=(f"{p}/alerts/#", f"{p}/cmd/#", f"{p}/deadletter"),
            password_of=None if password_of is None else password_of + PUBLISH_SUFFIX,
        ),
    )


# --------------------------------------------------------------------------- rendering (pure)


# --------------------------------------------------------------------------- I/O


# --------------------------------------------------------------------------- helpers


def read_passwords(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {
            str(a["username"]): str(a["password"]) for a in doc["accounts"] if a.get("password")
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} exists but cannot be read as emguard credentials ({type(exc).__name__}); "
            "move it away or pass rotate=True / --rotate to issue new passwords"
        ) from exc


def write_private(path: Path, text: str) -> None:
    """Create or replace ``path`` with mode 0600 from the first byte (no window where it is readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_secret(path: Path, text: str) -> None:
    """One secret per file, no newline, 0444: only inside the 0700 ``secrets/`` directory.

    Read-only for everyone because compose bind-mounts the file itself into a
    container running as another user (the engine's uid 10001); the directory's
    0700 is what keeps other users of this host out.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a 0444 leftover of an interrupted run
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
        os.fchmod(fd, 0o444)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o644)
    os.replace(tmp, path)
