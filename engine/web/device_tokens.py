"""Per-device bearer tokens: the credential a victim's phone uses for the victim app's API.

Operators' tokens (``engine.web.auth``) name a person and a role; a device token
names one device and nothing else, so a stolen phone's token can send that
phone's own position and panic, and read that phone's own warnings, and no
more.  Tokens come from ``EMGUARD_DEVICE_TOKENS`` (``token:device_id,...``)
and/or ``EMGUARD_DEVICE_TOKENS_FILE`` (one ``token:device_id`` per line, ``#``
comments), read once at start-up; a malformed, short or repeated token fails
there with a message that says what to fix.

A token is looked up by comparing its SHA-256 with every entry's through
``hmac.compare_digest``, always over all entries: neither the time of a
refusal nor that of a match says how much of a guess was right or where in
the table it sat.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from engine.errors import ConfigError

ENV_TOKENS = "EMGUARD_DEVICE_TOKENS"
ENV_TOKENS_FILE = "EMGUARD_DEVICE_TOKENS_FILE"
MIN_TOKEN_CHARS = 16  # a phone keeps it for months: make guessing it hopeless (secrets.token_urlsafe)


def parse_device_tokens(text: str | None, *, source: str = ENV_TOKENS) -> dict[str, str]:
    """``token:device_id`` entries separated by commas or newlines -> {token: device_id}."""
    out: dict[str, str] = {}
    for line in (text or "").replace(",", "\n").splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        token, sep, device = entry.rpartition(":")
        token, device = token.strip(), device.strip()
        if not sep or not token or not device:
            raise ConfigError(f"{source} entry {entry[:4]}…: use token:device_id")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{source}: the token of device {device} is shorter than {MIN_TOKEN_CHARS} "
                "characters; make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
        if token in out:
            raise ConfigError(f"{source}: a token is given twice (devices {out[token]} and {device})")
        out[token] = device
    return out


def device_tokens_from_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tokens from ``EMGUARD_DEVICE_TOKENS`` and the file named by ``EMGUARD_DEVICE_TOKENS_FILE``."""
    env = os.environ if env is None else env
    tokens = parse_device_tokens(env.get(ENV_TOKENS), source=ENV_TOKENS)
    name = env.get(ENV_TOKENS_FILE)
    if name:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{ENV_TOKENS_FILE}={name}: cannot read it ({exc.strerror})") from exc
        for token, device in parse_device_tokens(text, source=name).items():
            if token in tokens:
                raise ConfigError(f"{name}: a token is also in {ENV_TOKENS} (device {device})")
            tokens[token] = device
    return tokens


class DeviceTokens:
    """Maps an ``Authorization: Bearer …`` header to the one device it may act for."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._entries = [
            (hashlib.sha256(token.encode()).digest(), device) for token, device in tokens.items()
        ]

    @property
    def enabled(self) -> bool:
        """False when no device token is configured: the victim API then refuses everyone."""
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def device(self, authorization: str | None) -> str | None:
        """The device of a valid token, or None (missing header, other scheme, unknown token)."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        found: str | None = None
        for known, device in self._entries:  # every entry, match or not: constant time
            if hmac.compare_digest(known, digest):
                found = device
        return found
