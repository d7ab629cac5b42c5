"""The HTML score report is self-contained and shows tracks, zones, alerts and misses."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from devices.timeutil import format_time, parse_time
from simulator.generate import simulate
from simulator.scoring import score_files
from simulator.suite import SCENARIO_DIR
from simulator.truth import read_truth


def test_report_is_offline_html_with_map_timeline_and_tables(tmp_path):
    """No scripts or external references; the SVG map has both tracks, the zones, an alert, a miss and a false alarm."""
    trace, truth, orders = tmp_path / "t.jsonl", tmp_path / "truth.jsonl", tmp_path / "o.json"
    simulate(SCENARIO_DIR / "exclusion_breach.json", trace, truth, orders)
    home, school = read_truth(truth)
    first_fix = next(
        json.loads(line)["payload"]
        for line in trace.read_text().splitlines()
        if "AM-1001/fix" in line
    )
    alerts = tmp_path / "alerts.jsonl"
    changes = [
        {
            "alert_id": "A-hit",
            "kind": "exclusion",
            "level": "alarm",
            "state": "open",
            "order": "O-1",
            "subject": "S-1",
            "zone": "Z-home-P1",
            "device_time": format_time(home.start + 30),
            "evidence": {"fixes": [f"AM-1001:{first_fix['seq']}"]},
        },
        {
            "alert_id": "A-false",
            "kind": "proximity",
            "level": "alarm",
            "state": "open",
            "order": "O-1",
            "subject": "S-1",
            "protected_person": "P-1",
            "device_time": format_time(parse_time("2026-11-23T07:00:00Z")),
        },
    ]
    alerts.write_text("".join(json.dumps(c) + "\n" for c in changes))
    report = tmp_path / "r.html"
    result = score_files(alerts, truth, report, trace=trace, orders=orders)
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)
    assert not re.search(r"@import|url\(", html)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 2
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    map_svg = svgs[0]
    assert map_svg.count("<polyline") == 2  # subject and victim tracks
    assert (
        "exclusion zone Z-home-P1 (O-1)" in map_svg and "exclusion zone Z-school (O-1)" in map_svg
    )
    assert "A-hit exclusion alarm" in map_svg
    assert "A-false proximity alarm FALSE ALARM" in map_svg
    assert "MISSED exclusion O-1/S-1/Z-school" in map_svg
    assert "MISSED" in html and school.zone in html
    assert [a.alert_id for a in result.false_alarms] == ["A-false"]


def test_report_without_trace_or_orders_still_renders(tmp_path):
    """Scoring files alone gives tables and a timeline, and says there is no map."""
    truth = tmp_path / "truth.jsonl"
    truth.write_text(
        '{"kind": "panic", "order": null, "subject": null, "protected_person": "P-1", '
        '"start": "2026-11-23T10:00:00Z", "end": "2026-11-23T10:00:00Z", "min_distance_m": null}\n'
    )
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(
        json.dumps(
            {
                "alert_id": "A-1",
                "kind": "panic",
                "level": "critical",
                "state": "open",
                "protected_person": "P-1",
                "device_time": "2026-11-23T10:00:01Z",
            }
        )
        + "\n"
    )
    report = tmp_path / "r.html"
    result = score_files(alerts, truth, report)
    html = report.read_text()
    assert "No trace or orders given" in html and "<svg" in html
    assert result.kind("panic").recall == 1.0
