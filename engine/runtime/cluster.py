"""Scale-out: which worker owns which case, so related fixes are evaluated by one worker.

With MQTT v5 shared subscriptions the broker hands each device message to any
worker, and one device's messages may even alternate between workers.  A
proximity rule needs the offender's and the victim's tracks in one place, and
every alert must be raised once.  So every *case* (a subject and everyone his
orders protect, merged transitively: a victim protected from two men joins
their cases) is owned by exactly one of ``workers`` workers, chosen by a stable
hash.  A worker that receives a message of another worker's case forwards it,
durably through its outbox, to ``{prefix}/internal/w{owner}/{original topic}``;
the owner subscribes to its own internal topic (not shared) with a persistent
session, so a forwarded message waits for an owner that is restarting.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from engine.core.cases import cases_of
from engine.core.orders import OrderBook


@dataclass(frozen=True, slots=True)
class Cluster:
    """This worker's place among ``workers`` and the case of every known device."""

    index: int
    workers: int
    case_of_device: dict[str, str]
    prefix: str = "em"

    @classmethod
    def from_book(cls, book: OrderBook, index: int, workers: int, prefix: str = "em") -> Cluster:
        """Cases are the connected groups of subjects and protected persons over the orders."""
        if workers < 1 or not 0 <= index < workers:
            raise ValueError(f"worker index {index} is not in 0..{workers - 1}")
        return cls(index, workers, dict(cases_of(book).of_device), prefix)

    def owner_of_case(self, case: str) -> int:
        """A stable worker index for a case (crc32, the same in every process)."""
        return zlib.crc32(case.encode()) % self.workers

    def owner_of_topic(self, topic: str, owntracks: Mapping[str, str] | None = None) -> int | None:
        """The worker that must evaluate a device message, or None when any worker may."""
        parts = topic.split("/")
        device: str | None = None
        if len(parts) == 4 and parts[0] == self.prefix and parts[1] == "dev":
            device = parts[2]
        elif len(parts) == 3 and parts[0] == "owntracks" and owntracks:
            device = owntracks.get(f"{parts[1]}/{parts[2]}")
        case = self.case_of_device.get(device) if device else None
        return None if case is None else self.owner_of_case(case)

    def internal_topic(self, worker: int, topic: str) -> str:
        """Where a message of ``worker``'s case is forwarded."""
        return f"{self.prefix}/internal/w{worker}/{topic}"

    def unwrap(self, topic: str) -> str | None:
        """The original topic of a message forwarded to this worker, or None if not forwarded."""
        mine = f"{self.prefix}/internal/w{self.index}/"
        return topic[len(mine):] if topic.startswith(mine) else None
