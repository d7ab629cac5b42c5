"""Bearer-token access control and the audit trail of the HTTP API.

Roles, weakest first: ``read-only`` (look), ``operator`` (act on alerts),
``supervisor`` (also change orders).  Tokens come from ``EMGUARD_API_TOKENS``
(``token:name:role,...``).  With no token configured the API runs in demo
mode: every request is allowed and acts as ``demo-operator`` with supervisor
rights — fine for ``emguard demo`` on 127.0.0.1, never for production, so the
server logs a warning when it starts that way.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import ConfigError

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


def parse_tokens(text: str | None) -> dict[str, Principal]:
    """``token:name:role,...`` -> {token: Principal}; a malformed entry fails at start-up."""
    tokens: dict[str, Principal] = {}
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"EMGUARD_API_TOKENS entry {entry[:4]}…: use token:name:role")
        token, name, role = parts
        if role not in ROLE_RANK:
            raise ConfigError(
                f"EMGUARD_API_TOKENS user {name}: role must be one of {', '.join(ROLES)}"
            )
        tokens[token] = Principal(name, role)
    return tokens


def tokens_from_env(env: Mapping[str, str] | None = None) -> dict[str, Principal]:
    """Tokens configured in the environment (empty: demo mode)."""
    env = os.environ if env is None else env
    return parse_tokens(env.get("EMGUARD_API_TOKENS"))


class Authenticator:
    """Maps an ``Authorization`` header to a principal."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        self.tokens = dict(tokens)

    @property
    def enabled(self) -> bool:
        """False in demo mode (no tokens configured)."""
        return bool(self.tokens)

    def identify(self, authorization: str | None) -> Principal | None:
        """The caller, or None when auth is on and the token is missing or unknown."""
        if not self.enabled:
            return Principal(DEMO_USER, "supervisor", demo=True)
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return self.tokens.get(authorization[7:].strip())


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
