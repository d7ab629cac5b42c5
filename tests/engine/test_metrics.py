"""Prometheus metrics: exact names, counts from engine stats and alert changes, gauges of state."""

from __future__ import annotations

import math

from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.core.testing import ORIGIN, T0
from engine.web.metrics import LAG_BUCKETS, BulkHistogram
from tests.engine.api_support import World, make_world

NAMES = {
    "emguard_fixes_received_total",
    "emguard_fixes_rejected_total",
    "emguard_dead_letters_total",
    "emguard_ingest_lag_seconds",
    "emguard_fix_to_alert_seconds",
    "emguard_alerts_total",
    "emguard_alert_changes_total",
    "emguard_open_alerts",
    "emguard_open_alerts_past_deadline",
    "emguard_ack_time_seconds",
    "emguard_devices_silent",
    "emguard_broker_connected",
    "emguard_broker_publishing",
    "emguard_store_connected",
    "emguard_queue_depth",
    "emguard_fixes_waiting",
    "emguard_state_commits_total",
    "emguard_state_commit_bytes_total",
    "emguard_state_commit_seconds_total",
}


async def scrape(w: World) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with w.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_every_metric_name_is_exported() -> None:
    """All fixed metric names appear in the exposition even before any traffic."""
    w = make_world()
    async with w.client() as c:
        text = (await c.get("/metrics")).text
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    assert declared >= NAMES, NAMES - declared
    assert "_total_total" not in text


async def test_counts_follow_fixes_rejections_alerts_and_acks() -> None:
    """Fixes, rejections, dead letters, raised alerts, changes, lag, latency and ack time are counted."""
    w = make_world()
    aid = w.raise_exclusion()  # 3 fixes, arrival == device time
    w.send(("em/dev/AM-1001/fix", b"{not json"))
    w.clock.now = T0 + 40
    w.service.act(aid, "ack", "alice", "")
    m = await scrape(w)
    assert m[("emguard_fixes_received_total", ())] == 3
    rejected = {k[1]: v for k, v in m.items() if k[0] == "emguard_fixes_rejected_total"}
    dead = {k[1]: v for k, v in m.items() if k[0] == "emguard_dead_letters_total"}
    assert sum(rejected.values()) == 1 and sum(dead.values()) == 1
    assert set(rejected) == set(dead)
    # the first fix inside raises a warning, the second confirms it: counted at both levels
    assert m[("emguard_alerts_total", (("kind", "exclusion"), ("level", "warning")))] == 1
    assert m[("emguard_alerts_total", (("kind", "exclusion"), ("level", "alarm")))] == 1
    assert m[("emguard_alert_changes_total", (("state", "open"),))] == 2  # raised, then risen
    assert m[("emguard_alert_changes_total", (("state", "acknowledged"),))] == 1
    assert m[("emguard_ingest_lag_seconds_count", ())] == 3
    assert m[("emguard_ingest_lag_seconds_sum", ())] == 0
    assert m[("emguard_fix_to_alert_seconds_count", ())] == 2  # the warning and its rise to alarm
    labels = (("kind", "exclusion"), ("level", "alarm"))
    assert m[("emguard_ack_time_seconds_count", labels)] == 1
    raised_at = w.engine.alerts.alerts[aid].raised_at
    assert m[("emguard_ack_time_seconds_sum", labels)] == T0 + 40 - raised_at
    assert w.engine.stats.lag_s == []  # consumed
    # a second scrape does not count the same fixes again
    assert (await scrape(w))[("emguard_fixes_received_total", ())] == 3


async def test_time_to_close_is_measured_by_kind_and_highest_level() -> None:
    """Closing an alarm with its outcome observes raise-to-close under the alarm's kind and level."""
    w = make_world()
    aid = w.raise_exclusion()
    w.clock.now = T0 + 400
    w.service.apply(w.engine.act(
        aid, "close", "alice", "he left at once", T0 + 400, outcome="subject_contacted"
    ))
    m = await scrape(w)
    labels = (("kind", "exclusion"), ("level", "alarm"))
    assert m[("emguard_close_time_seconds_count", labels)] == 1
    assert m[("emguard_close_time_seconds_sum", labels)] == T0 + 400 - w.engine.alerts.alerts[aid].raised_at
    assert m[("emguard_open_alerts", (("level", "alarm"),))] == 0


async def test_alarms_past_deadline_are_counted_by_kind_and_level() -> None:
    """An exclusion alarm nobody acknowledged is past its deadline, under its kind and level,
    also after its condition cleared; acknowledging it brings the count to 0."""
    w = make_world()
    aid = w.raise_exclusion()
    w.clock.now = T0 + 3600
    w.service.apply(w.engine.tick(T0 + 3600))  # escalated: still unacknowledged
    m = await scrape(w)
    labels = (("kind", "exclusion"), ("level", "alarm"))
    assert m[("emguard_alarms_past_deadline", labels)] == 1
    w.service.apply(w.engine.act(aid, "ack", "alice", "", T0 + 3601))
    assert (await scrape(w))[("emguard_alarms_past_deadline", labels)] == 0


async def test_gauges_reflect_open_alerts_deadline_silence_and_connection() -> None:
    """Open alerts by level, overdue ones, silent devices, broker and queue gauges follow state."""
    w = make_world()
    w.raise_exclusion()
    m = await scrape(w)
    assert m[("emguard_open_alerts", (("level", "alarm"),))] == 1
    assert m[("emguard_open_alerts", (("level", "critical"),))] == 0
    assert m[("emguard_open_alerts_past_deadline", ())] == 0
    assert m[("emguard_broker_connected", ())] == 0 and m[("emguard_store_connected", ())] == 1
    w.service.connected = True
    w.clock.now = T0 + 3600
    w.engine.tick(T0 + 3600)
    w.service.inbox.put_nowait((T0, "em/dev/X/fix", b"{}"))
    m = await scrape(w)
    assert m[("emguard_open_alerts_past_deadline", ())] >= 1
    assert m[("emguard_devices_silent", ())] == 1
    assert m[("emguard_broker_connected", ())] == 1 and m[("emguard_queue_depth", ())] == 1


async def test_fixes_held_for_a_gap_in_their_sequence_are_shown_waiting() -> None:
    w = make_world()
    w.raise_exclusion()  # fixes 1-3 of AM-1001, evaluated
    w.subject.seq += 1  # fix 4 lost on the way
    w.service.apply(w.engine.handle(*w.subject.fix(T0 + 40, *ORIGIN), T0 + 40))
    assert (await scrape(w))[("emguard_fixes_waiting", ())] == 1
    w.clock.now = T0 + 45
    w.service.apply(w.engine.tick(T0 + 45))  # past the reorder hold: evaluated without fix 4
    assert (await scrape(w))[("emguard_fixes_waiting", ())] == 0


def test_registries_are_separate_per_server() -> None:
    """Two servers in one process do not share (or clash on) metric registries."""
    a, b = make_world(), make_world()
    assert a.server.metrics.registry is not b.server.metrics.registry


async def test_durable_commits_are_counted_with_their_size() -> None:
    """The engineer on call sees how often state is committed and how much each commit writes."""
    from engine.runtime.store import MemoryStore

    w = make_world()
    w.service.store = MemoryStore()
    w.raise_exclusion()
    await w.service._commit()
    m = await scrape(w)
    assert m[("emguard_state_commits_total", ())] == 1
    stored = sum(len(p) for p in w.service.store.state.values())
    assert m[("emguard_state_commit_bytes_total", ())] == stored > 0
    assert m[("emguard_state_commit_seconds_total", ())] > 0


@given(values=st.lists(st.floats(min_value=0.0, max_value=1e5), max_size=60), batches=st.integers(1, 4))
@example(values=[0.1, 0.25, 3600.0, 3600.5, 0.0], batches=2)  # on bucket bounds, and past the last
def test_the_bulk_lag_histogram_exposes_what_observing_each_value_would(
    values: list[float], batches: int
) -> None:
    """BulkHistogram's buckets, count and sum equal prometheus_client's Histogram's, fed alike."""
    plain_reg, bulk_reg = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("lag_seconds", "lag", buckets=LAG_BUCKETS, registry=plain_reg)
    bulk = BulkHistogram("lag_seconds", "lag", LAG_BUCKETS, bulk_reg)
    step = max(1, len(values) // batches)
    for i in range(0, len(values), step):
        for v in values[i : i + step]:
            plain.observe(v)
        bulk.observe_many(values[i : i + step])

    def samples(reg: CollectorRegistry) -> dict[tuple[str, str], float]:
        text = generate_latest(reg).decode()
        return {
            (s.name, s.labels.get("le", "")): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if not s.name.endswith("_created")
        }

    want, got = samples(plain_reg), samples(bulk_reg)
    assert want.keys() == got.keys()
    assert all(want[k] == got[k] for k in want if k[0] != "lag_seconds_sum")
    assert math.isclose(got[("lag_seconds_sum", "")], want[("lag_seconds_sum", "")], rel_tol=1e-9, abs_tol=1e-9)
