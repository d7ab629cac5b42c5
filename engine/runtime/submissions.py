"""Messages taken in another way than MQTT (``Service.submit``), waiting for their commit.

The victim app posts her fixes and her panic over HTTPS; the service handles them exactly like
a device's MQTT message, and the HTTP answer must say "stored" only once the message's effects
are committed (with a store: durable), so the phone may then forget it.  A waiter is found by
the identity of the message's inbox item, which lives until the message is processed; from then
on waiters are kept in processing order, which is commit order.
"""

from __future__ import annotations

import asyncio

from engine.runtime.supervise import ServiceFailed


class Submissions:
    """The futures of ``submit`` callers: taken, processed, then committed (or failed)."""

    def __init__(self) -> None:
        self._taken: dict[int, asyncio.Future[None]] = {}  # by id() of the inbox item
        self._processed: list[asyncio.Future[None]] = []  # in processing order

    def add(self, item: object) -> asyncio.Future[None]:
        """A future resolved when ``item`` (an inbox entry) is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._taken[id(item)] = done
        return done

    def processed(self, item: object) -> None:
        """``item`` went through the engine: its waiter now waits for the next commit."""
        if self._taken:
            waiter = self._taken.pop(id(item), None)
            if waiter is not None:
                self._processed.append(waiter)

    @property
    def processed_count(self) -> int:
        """Processed submissions not yet committed (what a commit starting now covers)."""
        return len(self._processed)

    def committed(self, count: int) -> None:
        """The first ``count`` processed submissions are committed: their callers may go on."""
        for waiter in self._processed[:count]:
            if not waiter.done():
                waiter.set_result(None)
        del self._processed[:count]

    def fail(self, reason: str) -> None:
        """Stopping: callers whose message was not committed hear that it was not."""
        for waiter in [*self._taken.values(), *self._processed]:
            if not waiter.done():
                waiter.set_exception(ServiceFailed(reason))
        self._taken.clear()
        self._processed.clear()
