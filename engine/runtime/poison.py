"""Poison messages: a message that made the service fail twice is dead-lettered, not redelivered.

When processing or committing fails in a way the service cannot repair, the process stops
(``engine.runtime.supervise``) without acknowledging what it had not committed, and the broker
redelivers those messages to the restarted process.  If one of them is what broke it, that
would repeat forever and no alert would leave for anyone.  So, before stopping, the service
records every uncommitted message as a *suspect* (a counter per message in the state store).
After the restart a suspect is handled on its own, committed alone: if that fails, only it was
in flight and its count reaches ``POISON_AFTER``; the next process dead-letters it with the
reason ``poison`` and acknowledges it.  A suspect that goes through is cleared, so the messages
that happened to share the first failed commit lose nothing.

Pure: keys and verdicts only; the store keeps the counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

POISON_AFTER: Final = 2  # failures with the message in flight before it is set aside


def message_key(topic: str, payload: bytes) -> str:
    """A message's identity across redeliveries: the broker resends the same topic and bytes."""
    return hashlib.blake2b(topic.encode("utf-8", "surrogatepass") + b"\0" + payload, digest_size=16).hexdigest()


class Suspects:
    """The suspect counts loaded at start, with what this process has learnt since."""

    __slots__ = ("counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts: dict[str, int] = dict(counts or {})

    def __bool__(self) -> bool:
        return bool(self.counts)

    def failures(self, key: str) -> int:
        """How often the service failed with this message uncommitted (0: never)."""
        return self.counts.get(key, 0)

    def is_poison(self, key: str) -> bool:
        """True once the message was in flight at ``POISON_AFTER`` failures."""
        return self.counts.get(key, 0) >= POISON_AFTER

    def cleared(self, keys: Iterable[str]) -> list[str]:
        """Forget these (handled and committed, or dead-lettered); the keys that were suspects."""
        gone = [k for k in keys if self.counts.pop(k, None) is not None]
        return gone
