"""Scoring on hand-built alert sets: recall, delay, lead time, false alarms, flapping, targets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.timeutil import format_time
from simulator.errors import TraceError
from simulator.score import (
    ScoreResult,
    alert_episodes,
    combine,
    read_alerts,
    score,
)
from simulator.scoring import score_files
from simulator.tables import format_table, result_summary
from simulator.truth import Episode, write_truth

T0 = 1_795_430_000.0  # 2026-11-23 morning, UTC
DAY = 86400.0
PROX = Episode(
    "proximity",
    T0 + 1000,
    T0 + 1600,
    "O-1",
    "S-1",
    "P-1",
    min_distance_m=40.0,
    contact_at={"100": T0 + 1200},
)
ZONE = Episode("exclusion", T0 + 5000, T0 + 5600, "O-1", "S-1", zone="Z-1", min_distance_m=-300.0)
TAMPER = Episode("tamper", T0 + 8000, T0 + 8600, subject="S-1", device="AM-1001")


def change(
    aid: str,
    t: float,
    level: str = "alarm",
    state: str = "open",
    *,
    kind: str = "proximity",
    issued: float | None = None,
    **keys: Any,
) -> dict[str, Any]:
    """One alert state change (contract §5) with device time T0 + t."""
    c = {
        "v": 1,
        "alert_id": aid,
        "kind": kind,
        "level": level,
        "state": state,
        "order": "O-1",
        "subject": "S-1",
        "protected_person": "P-1" if kind == "proximity" else None,
        "zone": None,
        "device_time": format_time(T0 + t),
        "raised_at": format_time(T0 + (issued if issued is not None else t) + 0.3),
    }
    c.update(keys)
    return c


def run(
    changes: list[dict[str, Any]], truth: list[Episode], subjects: int = 1, days: float = 1.0
) -> ScoreResult:
    return score(alert_episodes(changes), truth, subjects=subjects, span_s=days * DAY)


def test_a_predictive_alarm_is_a_detection_with_positive_lead_and_one_alert():
    """Warning 300 s before contact distance, alarm 120 s before, resolved after: lead 120 s, delay -300 s."""
    r = run(
        [
            change("A-1", 700, "warning"),
            change("A-1", 880, "alarm", updated_at=format_time(T0 + 880)),
            change("A-1", 1650, "alarm", "resolved", updated_at=format_time(T0 + 1650)),
        ],
        [PROX],
    )
    (ep,) = r.episodes
    assert ep.detected and ep.alert_ids == ("A-1",)
    assert ep.delay_s == pytest.approx(-300.0)
    assert ep.lead_s == pytest.approx(120.0)
    assert ep.contact_lead_s == {"100": pytest.approx(320.0)}
    k = r.kind("proximity")
    assert (k.recall, k.warned_before, k.mean_alerts, k.false_alarms) == (1.0, 1.0, 1.0, 0)
    assert r.false_alarms == ()


def test_a_missed_episode_has_no_detection_and_no_warning():
    """No alert: recall 0, warned-before 0."""
    r = run([], [PROX])
    (ep,) = r.episodes
    assert not ep.detected and ep.delay_s is None and ep.lead_s is None
    assert r.kind("proximity").recall == 0.0
    assert r.kind("proximity").warned_before == 0.0


def test_an_alarm_after_the_episode_began_is_a_late_warning():
    """Opened at alarm 45 s into the episode: delay 45 s, lead -45.3 s (raised_at), not warned before."""
    r = run([change("A-1", 1045)], [PROX])
    (ep,) = r.episodes
    assert ep.delay_s == pytest.approx(45.0)
    assert ep.lead_s == pytest.approx(-45.3)
    assert r.kind("proximity").warned_before == 0.0


def test_a_burst_alarm_warns_when_it_is_issued_not_at_its_device_time():
    """An alarm on a buffered fix (device time before the episode) issued 30 min later gives lead -1800 s."""
    r = run(
        [
            change(
                "A-1",
                900,
                updated_at=format_time(T0 + 1000 + 1800),
                raised_at=format_time(T0 + 2800),
            )
        ],
        [PROX],
    )
    (ep,) = r.episodes
    assert ep.delay_s == pytest.approx(-100.0)
    assert ep.lead_s == pytest.approx(-1800.0)


def test_warning_only_detects_but_does_not_warn_the_victim():
    """A warning-level alert counts for recall, not for the victim warning; it is never a false alarm."""
    r = run([change("A-1", 1100, "warning"), change("A-9", 50_000, "warning")], [PROX])
    (ep,) = r.episodes
    assert ep.detected and ep.lead_s is None
    assert r.false_alarms == ()


def test_flapping_counts_distinct_alert_ids_per_episode():
    """Three alerts opened and resolved inside one episode: 3 alerts per episode."""
    changes = []
    for i, t in enumerate((1010, 1200, 1400)):
        changes += [change(f"A-{i}", t), change(f"A-{i}", t + 60, state="resolved")]
    r = run(changes, [PROX])
    assert r.episodes[0].alert_ids == ("A-0", "A-1", "A-2")
    assert r.kind("proximity").alerts_per_episode == (3,)
    assert next(t for t in r.targets if t.name == "alerts per episode").ok is False


@pytest.mark.parametrize(
    ("alert", "why"),
    [
        (change("A-x", 1100, protected_person="P-2"), "another protected person"),
        (change("A-x", 1100, order="O-2"), "another order"),
        (change("A-x", 1600 + 120 + 1), "opened after end + tolerance"),
        (change("A-x", 1000 - 3600 - 1), "opened before the lead window"),
        (change("A-x", 1100, kind="exclusion", zone="Z-1"), "another kind"),
    ],
)
def test_non_matching_alarms_are_false_alarms_and_miss_the_episode(alert, why):
    """An alarm that does not match the episode leaves it missed and counts as a false alarm."""
    r = run([alert], [PROX])
    assert not r.episodes[0].detected, why
    assert [a.alert_id for a in r.false_alarms] == ["A-x"]


def test_an_alert_resolved_before_the_episode_does_not_match():
    """Open and resolved well before the start (beyond tolerance): not this episode."""
    r = run([change("A-1", 500), change("A-1", 800, state="resolved")], [PROX])
    assert not r.episodes[0].detected
    assert len(r.false_alarms) == 1


def test_an_alert_ends_when_its_condition_cleared_not_when_it_was_closed():
    """The engine's end counts (cleared_at, device time); a person closing it later does not,
    and a clear before the episode (beyond tolerance) rules the alert out as before."""
    cleared_early = change("A-1", 500) | {"condition": "cleared", "cleared_at": format_time(T0 + 800)}
    r = run([change("A-1", 500), cleared_early, change("A-1", 5000, state="closed")], [PROX])
    assert not r.episodes[0].detected
    (ep,) = alert_episodes([change("A-2", 900), change("A-2", 900) | {
        "condition": "cleared", "cleared_at": format_time(T0 + 1700)}])  # fmt: skip
    assert ep.end_t == T0 + 1700  # not the device time of its last level change
    late_clear = change("A-3", 900) | {"condition": "cleared", "cleared_at": format_time(T0 + 1700)}
    assert run([change("A-3", 900), late_clear], [PROX]).episodes[0].detected


def test_tolerance_window_edges_match():
    """Opened exactly at end + tolerance still matches."""
    r = run([change("A-1", 1600 + 120)], [PROX])
    assert r.episodes[0].detected


def test_zone_and_device_episodes_match_on_the_keys_the_truth_names():
    """Exclusion needs the zone; tamper names no order, so any order matches."""
    r = run(
        [
            change("Z-a", 5010, kind="exclusion", zone="Z-2"),
            change("Z-b", 5020, kind="exclusion", zone="Z-1"),
            change("T-1", 8001, "critical", kind="tamper", order="O-7"),
        ],
        [ZONE, TAMPER],
    )
    zone_ep, tamper_ep = r.episodes
    assert zone_ep.alert_ids == ("Z-b",) and zone_ep.delay_s == pytest.approx(20.0)
    assert zone_ep.lead_s is None  # lead time is a proximity measure
    assert tamper_ep.alert_ids == ("T-1",) and tamper_ep.max_level == "critical"
    assert [a.alert_id for a in r.false_alarms] == ["Z-a"]


def test_false_alarms_per_subject_day():
    """Four false alarms over 2 subjects x 2 days = 1 per subject-day (the target's edge)."""
    changes = [change(f"F-{i}", 20_000 + 1000 * i) for i in range(4)]
    r = run(changes, [], subjects=2, days=2.0)
    assert r.subject_days == pytest.approx(4.0)
    assert r.false_per_subject_day == pytest.approx(1.0)
    assert next(t for t in r.targets if t.name.startswith("false")).ok is True
    assert r.kind("proximity").false_alarms == 4 and r.kind("proximity").episodes == 0


def test_targets_report_pass_fail_and_not_applicable():
    """Recall targets are n/a without episodes; a clean detection passes everything."""
    clean = run(
        [change("A-1", 880), change("Z-1", 5010, kind="exclusion", zone="Z-1")], [PROX, ZONE]
    )
    assert all(t.ok for t in clean.targets)
    empty = run([], [])
    assert [t.ok for t in empty.targets] == [None, None, None, True, None, None]


def test_a_fall_followed_by_a_rise_within_ten_minutes_is_a_level_reversal():
    """alarm -> warning -> alarm within 10 min is one reversal; a rise 11 min after a fall is not."""
    flap = [change("A-1", 880), change("A-1", 950, "warning"), change("A-1", 1200, "alarm")]
    slow = [change("B-1", 880), change("B-1", 950, "warning"), change("B-1", 1650, "alarm")]
    r = run(flap + slow, [PROX])
    by_id = {a.alert_id: a.reversals for a in r.alerts}
    assert by_id == {"A-1": 1, "B-1": 0}
    assert r.reversal_share == pytest.approx(0.5)
    target = next(t for t in r.targets if t.name.startswith("level reversals"))
    assert target.ok is False and target.goal == "<= 5 %"


def test_excluded_episodes_are_left_out_of_warned_before_only():
    """An episode the truth marks excluded (her device was left at home) still counts for recall,
    not for 'warned before'; the table says how many were left out and why."""
    blind = Episode("proximity", T0 + 9000, T0 + 9300, "O-1", "S-1", "P-1", excluded="device_left")
    r = run([change("A-1", 880)], [PROX, blind])
    k = r.kind("proximity")
    assert (k.episodes, k.detected, k.excluded, k.warned_before) == (2, 1, 1, 1.0)
    assert "device_left 1" in format_table(r)
    assert Episode.from_json(blind.to_json()) == blind


def test_combine_sums_exposure_and_keeps_alert_ids_apart():
    """Runs combined: ids prefixed with the run name, subject-days summed, kinds re-aggregated."""
    a = run([change("A-1", 880)], [PROX])
    b = run([change("A-1", 20_000)], [], subjects=3, days=0.5)
    both = combine([("one", a), ("two", b)])
    assert both.subject_days == pytest.approx(2.5)
    assert both.episodes[0].alert_ids == ("one:A-1",)
    assert [x.alert_id for x in both.false_alarms] == ["two:A-1"]
    assert both.kind("proximity").episodes == 1 and both.kind("proximity").false_alarms == 1


def test_table_shows_each_kind_exposure_and_targets():
    """The terminal table names every kind and every target."""
    text = format_table(run([change("A-1", 880), change("F-1", 30_000)], [PROX, ZONE]))
    assert text.splitlines()[0].split()[:4] == ["kind", "episodes", "detected", "recall"]
    assert "exclusion  1" in text and "proximity  1" in text
    assert "1.00 subject-days" in text and "false alarms 1 = 1.00 per subject-day" in text
    assert "[FAIL] exclusion recall: 0 %" in text and "[ok  ] proximity recall: 100 %" in text
    assert "within 100 m: warned before in 1/1" in text


def test_score_files_reads_files_and_takes_exposure_from_trace_and_orders(tmp_path):
    """End to end on files: two subjects from the orders, span from the trace's arrivals."""
    write_truth([PROX], tmp_path / "truth.jsonl")
    with open(tmp_path / "alerts.jsonl", "w") as fh:
        fh.write(json.dumps(change("A-1", 880)) + "\n")
        fh.write(json.dumps({"_channel": "victim", "note": "not an alert change"}) + "\n")
    trace = tmp_path / "trace.jsonl"
    lines = [
        {"arrival": format_time(T0 + t), "topic": "em/dev/AM-1/fix", "payload": {"v": 1}}
        for t in (0, 43200)
    ]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    orders = tmp_path / "orders.json"
    orders.write_text(
        json.dumps(
            {"v": 1, "subjects": [{"id": "S-1", "devices": []}, {"id": "S-2", "devices": []}]}
        )
    )
    r = score_files(tmp_path / "alerts.jsonl", tmp_path / "truth.jsonl", trace=trace, orders=orders)
    assert (r.subjects, r.span_s, r.exposure) == (2, 43200.0, "trace")
    assert r.episodes[0].detected
    est = score_files(tmp_path / "alerts.jsonl", tmp_path / "truth.jsonl")
    assert est.exposure == "estimate" and est.subjects == 1


def test_bad_alert_line_names_file_and_line(tmp_path):
    """An alert change without a readable device_time is a TraceError."""
    path = tmp_path / "alerts.jsonl"
    path.write_text(
        json.dumps(change("A-1", 1))
        + "\n"
        + json.dumps({"alert_id": "A-2", "device_time": "noon"})
        + "\n"
    )
    with pytest.raises(TraceError, match=r"alerts\.jsonl:2"):
        read_alerts(path)


def test_json_summary_carries_kinds_episodes_and_targets():
    """result_summary is plain data with the same numbers as the result."""
    r = run([change("A-1", 880), change("F-1", 30_000)], [PROX, ZONE])
    doc = json.loads(json.dumps(result_summary(r)))
    assert doc["kinds"]["proximity"]["lead_median_s"] == pytest.approx(119.7)
    assert doc["kinds"]["exclusion"]["recall"] == 0.0
    assert doc["false_alarms"] == 1 and doc["false_alarm_alerts"][0]["alert_id"] == "F-1"
    assert [e["detected"] for e in doc["episodes"]] == [True, False]
    assert {t["name"]: t["ok"] for t in doc["targets"]}["exclusion recall"] is False


def test_the_exclusion_recall_target_leaves_out_grazes_and_says_how_many():
    """An episode less than RECALL_MIN_DEPTH_M deep is scored but not in the recall target
    (no fix can show a 10 m graze in 10-17 m noise); the target's goal names how many."""
    graze = Episode("exclusion", T0 + 9000, T0 + 9008, "O-1", "S-1", zone="Z-1", min_distance_m=-10.0)
    r = run([change("Z-1", 5010, kind="exclusion", zone="Z-1")], [ZONE, graze])
    assert r.kind("exclusion").recall == 0.5  # the table still counts the miss
    target = next(t for t in r.targets if t.name == "exclusion recall")
    assert target.ok is True and target.value == 1.0
    assert "1 grazes < 20 m deep left out" in target.goal
    only_graze = run([], [graze])
    assert next(t for t in only_graze.targets if t.name == "exclusion recall").ok is None


def test_an_alert_late_data_took_up_again_ends_at_its_last_clear():
    """Cleared, then active again (engine.core.alerts resume), then cleared: it ends at the last
    clear, so the episode it covers in full is matched with one alert."""
    first_clear = change("A-1", 1100) | {"condition": "cleared", "cleared_at": format_time(T0 + 1150)}
    resumed = change("A-1", 1300) | {"condition": "active"}
    last_clear = change("A-1", 1300) | {"condition": "cleared", "cleared_at": format_time(T0 + 1590)}
    (ep,) = alert_episodes([change("A-1", 1100), first_clear, resumed, last_clear])
    assert ep.end_t == T0 + 1590
    (still,) = alert_episodes([change("A-1", 1100), first_clear, resumed])
    assert still.end_t == float("inf")
