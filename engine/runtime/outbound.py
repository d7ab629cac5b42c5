"""Outgoing payloads as wire bytes, never larger than the broker takes.

mosquitto closes a connection that sends a packet over its ``max_packet_size``
(deploy/broker/mosquitto.conf), and the outbox republishes the same message after every
reconnect: one oversized message stopped every alert behind it.  Our own messages are small,
but an alert carries operator notes and evidence, so the bound is enforced here, on the way
out, whatever produced the payload.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_PUBLISH_BYTES: Final = 256 * 1024  # well under the broker's max_packet_size (deploy/)
_TEXT_KEEP: Final = 1_000  # characters kept of a long text in a shortened payload
_LIST_KEEP: Final = 50  # items kept of a long list


def encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON, as every outgoing message is published."""
    return json.dumps(payload, separators=(",", ":")).encode()


def encode_bounded(payload: dict[str, Any], limit: int = MAX_PUBLISH_BYTES) -> tuple[bytes, bool]:
    """``payload`` as JSON bytes of at most ``limit``, and whether it had to be shortened.

    A shortened payload keeps every key and every short value (alert id, kind, level, state,
    times), cuts texts to ``_TEXT_KEEP`` characters and lists to ``_LIST_KEEP`` items, and says
    ``"truncated": true``: the centre still hears of the alert and can fetch it in full over
    the HTTP API.  If even that is too large, only the top level's short scalars remain.
    """
    data = encode(payload)
    if len(data) <= limit:
        return data, False
    short = _shorten(payload)
    short["truncated"] = True
    data = encode(short)
    if len(data) <= limit:
        return data, True
    bare = {k: v for k, v in short.items() if isinstance(v, int | float | bool) or v is None
            or (isinstance(v, str) and len(v) <= 200)}
    bare["truncated"] = True
    return encode(bare), True


def _shorten(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= _TEXT_KEEP else value[:_TEXT_KEEP] + "…"
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shorten(v) for v in value[:_LIST_KEEP]]
    return value
