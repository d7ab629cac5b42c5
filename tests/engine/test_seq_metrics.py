"""Issue 21: duplicates and seq restarts, once invisible, are Prometheus counters."""

from __future__ import annotations

from engine.core.testing import T0, DeviceScript
from tests.engine.api_support import BAN, make_world
from tests.engine.test_metrics import scrape


async def test_duplicates_and_seq_restarts_are_counted() -> None:
    """A repeated fix counts as a duplicate; a reboot's seq 1 with a later time as a restart."""
    w = make_world()
    w.raise_exclusion()  # seq 1-3 of AM-1001 at T0 .. T0 + 2
    w.send(DeviceScript("AM-1001", seq=2).fix(T0 + 2, BAN[0] + 2, BAN[1]), T0 + 3)  # seq 3 again
    m = await scrape(w)
    assert m[("emguard_device_duplicates_total", ())] == 1
    assert m[("emguard_device_seq_restarts_total", ())] == 0
    w.send(DeviceScript("AM-1001").fix(T0 + 300, BAN[0], BAN[1]), T0 + 301)  # rebooted: seq 1
    m = await scrape(w)
    assert m[("emguard_device_duplicates_total", ())] == 1
    assert m[("emguard_device_seq_restarts_total", ())] == 1
    assert (await scrape(w))[("emguard_device_seq_restarts_total", ())] == 1  # not counted twice
