"""Bearer-token access control and the audit trail of the HTTP API.

Roles, weakest first: ``read-only`` (look), ``operator`` (act on alerts),
``supervisor`` (also change orders).  Tokens come from ``EMGUARD_API_TOKENS``
(``token:name:role,...``) and/or a file named by ``EMGUARD_API_TOKENS_FILE``
(the same entries, one per line or comma-separated, ``#`` comments), so a
Kubernetes or compose secret can be mounted instead of put in the
environment.  With no token configured the API runs in demo mode: every
request is allowed and acts as ``demo-operator`` with supervisor rights —
fine for ``emguard demo`` on 127.0.0.1; ``emguard serve`` refuses to start
that way unless told ``--insecure-no-auth`` (``engine.tools.serve``).

A presented token is compared with every configured token in constant time
(``hmac.compare_digest`` of SHA-256 digests, no early exit, no dict look-up
keyed by the secret), so response timing does not tell a caller how much of
a guessed token was right, nor its length.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import ConfigError
from engine.redact import register_secret

ROLES = ("read-only", "operator", "supervisor")
ROLE_RANK: Mapping[str, int] = {r: i for i, r in enumerate(ROLES)}
DEMO_USER = "demo-operator"
AUDIT_KEEP = 10_000

audit_log = logging.getLogger("emguard.audit")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator's name and role (``demo`` when auth is off)."""

    name: str
    role: str
    demo: bool = False

    def may(self, role: str) -> bool:
        """True when this principal has at least ``role``."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


MIN_TOKEN_LEN = 16  # a shorter bearer token is guessable: refused at start-up


def parse_tokens(text: str | None, source: str = "EMGUARD_API_TOKENS") -> dict[str, Principal]:
    """``token:name:role,...`` -> {token: Principal}; a malformed entry fails at start-up.

    Entries may also be separated by newlines, and ``#`` starts a comment line
    (the file form).  Every token is registered with ``engine.redact`` so it is
    masked if it ever reaches a log line.  Error messages never quote a token.
    """
    tokens: dict[str, Principal] = {}
    lines = [ln for ln in (text or "").splitlines() if not ln.lstrip().startswith("#")]
    for raw in ",".join(lines).split(","):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"{source}: an entry is malformed; use token:name:role")
        token, name, role = parts
        if role not in ROLE_RANK:
            raise ConfigError(f"{source} user {name}: role must be one of {', '.join(ROLES)}")
        if len(token) < MIN_TOKEN_LEN:
            raise ConfigError(
                f"{source} user {name}: token shorter than {MIN_TOKEN_LEN} characters"
            )
        register_secret(token)
        tokens[token] = Principal(name, role)
    return tokens


def read_tokens_file(path: str) -> dict[str, Principal]:
    """Tokens from a mounted secret file (``EMGUARD_API_TOKENS_FILE``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read EMGUARD_API_TOKENS_FILE {path}: {exc.strerror}") from exc
    return parse_tokens(text, source=f"EMGUARD_API_TOKENS_FILE {path}")


def load_tokens(inline: str | None, path: str | None) -> dict[str, Principal]:
    """Tokens from both sources; the same token twice with different users fails."""
    tokens = parse_tokens(inline)
    if path:
        for token, who in read_tokens_file(path).items():
            if tokens.setdefault(token, who) != who:
                raise ConfigError(
                    f"token of {who.name} is also configured for {tokens[token].name}"
                )
    return tokens


def tokens_from_env(env: Mapping[str, str] | None = None) -> dict[str, Principal]:
    """Tokens configured in the environment or its token file (empty: demo mode)."""
    env = os.environ if env is None else env
    return load_tokens(env.get("EMGUARD_API_TOKENS"), env.get("EMGUARD_API_TOKENS_FILE") or None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Authenticator:
    """Maps an ``Authorization`` header to a principal."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        # digests only: the secrets themselves are not kept, and no lookup is keyed by them
        self._known: tuple[tuple[bytes, Principal], ...] = tuple(
            (_digest(token), who) for token, who in tokens.items()
        )

    @property
    def enabled(self) -> bool:
        """False in demo mode (no tokens configured)."""
        return bool(self._known)

    def identify(self, authorization: str | None) -> Principal | None:
        """The caller, or None when auth is on and the token is missing or unknown.

        Every configured token is compared, whether or not an earlier one
        matched, so the time taken does not depend on which token (if any) is right.
        """
        if not self.enabled:
            return Principal(DEMO_USER, "supervisor", demo=True)
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        given = _digest(authorization[7:].strip())
        found: Principal | None = None
        for digest, who in self._known:
            if hmac.compare_digest(given, digest):
                found = who
        return found


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action (or a refused attempt), kept in memory and logged as JSON."""

    at: float
    user: str
    role: str
    method: str
    path: str
    action: str
    target: str
    status: int
    note: str = ""


class AuditTrail:
    """A bounded in-memory list of actions; each one is also written to the audit logger."""

    def __init__(self, keep: int = AUDIT_KEEP) -> None:
        self.entries: deque[AuditEntry] = deque(maxlen=keep)

    def record(self, entry: AuditEntry) -> None:
        """Keep and log one entry."""
        self.entries.append(entry)
        audit_log.info(json.dumps({"audit": asdict(entry)}, separators=(",", ":")))

    def recent(self, limit: int = 500) -> list[dict[str, Any]]:
        """Newest first."""
        out = [asdict(e) for e in reversed(self.entries)]
        return out[:limit]
