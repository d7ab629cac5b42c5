"""The service's inbox: filled from paho's callback, emptied in micro-batches, never dropping."""

from __future__ import annotations

import asyncio

from engine.runtime.intake import Inbox


async def test_take_returns_oldest_first_and_at_most_n():
    box: Inbox[int] = Inbox(capacity=10)
    for i in range(5):
        box.put_nowait(i)
    assert box.take(3) == [0, 1, 2]
    assert box.take(10) == [3, 4]
    assert box.take(10) == [] and box.empty() and box.qsize() == 0


async def test_wait_returns_at_once_when_something_waits_and_wakes_on_the_first_put():
    box: Inbox[str] = Inbox(capacity=4)
    box.put_nowait("a")
    await asyncio.wait_for(box.wait(), 1.0)
    box.take(1)
    waiter = asyncio.create_task(box.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done(), "nothing waits: the processor sleeps"
    box.put_nowait("b")
    await asyncio.wait_for(waiter, 1.0)
    assert box.get_nowait() == "b"
    later = asyncio.create_task(box.wait())
    await asyncio.sleep(0.01)
    assert not later.done(), "emptied by get_nowait: the next wait sleeps again"
    later.cancel()


def test_full_is_reported_but_nothing_is_refused_and_drained_is_half():
    box: Inbox[int] = Inbox(capacity=4)
    for i in range(6):  # a callback cannot wait: fullness is acted on by pausing the socket
        box.put_nowait(i)
    assert box.full and len(box) == 6
    box.take(3)
    assert box.full is False and box.drained is False
    box.take(1)
    assert box.drained
