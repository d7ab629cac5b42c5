"""Scores as text and as plain data: the terminal table and the JSON summary.

``format_table`` is what ``emguard score`` prints; ``result_summary`` is what
``--json`` writes (per kind, exposure, every episode, the targets), for CI
dashboards and for comparing engine versions.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from devices.timeutil import format_time
from simulator.score import ScoreResult, Target


def result_summary(result: ScoreResult) -> dict[str, Any]:
    """The scores as JSON-able data."""
    kinds = {}
    for k in result.kinds:
        leads = [v for v in k.leads_s if v is not None]
        kinds[k.kind] = {
            "episodes": k.episodes,
            "detected": k.detected,
            "recall": k.recall,
            "delay_median_s": statistics.median(k.delays_s) if k.delays_s else None,
            "delay_max_s": max(k.delays_s) if k.delays_s else None,
            "lead_median_s": statistics.median(leads) if leads else None,
            "lead_min_s": min(leads) if leads else None,
            "warned_before": k.warned_before,
            "alerts_per_episode": k.mean_alerts,
            "false_alarms": k.false_alarms,
        }
    return {
        "kinds": kinds,
        "exposure": {
            "subjects": result.subjects,
            "span_s": result.span_s,
            "subject_days": result.subject_days,
            "source": result.exposure,
        },
        "false_alarms": len(result.false_alarms),
        "false_per_subject_day": result.false_per_subject_day,
        "episodes": [
            {
                **r.episode.to_json(),
                "detected": r.detected,
                "alert_ids": list(r.alert_ids),
                "delay_s": r.delay_s,
                "lead_s": r.lead_s,
                "max_level": r.max_level,
            }
            for r in result.episodes
        ],
        "false_alarm_alerts": [
            {
                "alert_id": a.alert_id,
                "kind": a.kind,
                "level": a.max_level,
                "device_time": format_time(a.first_t),
            }
            for a in result.false_alarms
        ],
        "targets": [
            {"name": t.name, "value": t.value, "goal": t.goal, "ok": t.ok} for t in result.targets
        ],
    }


def format_table(result: ScoreResult) -> str:
    """A terminal table: one row per kind, then exposure, false alarms and the targets."""
    head = (
        "kind",
        "episodes",
        "detected",
        "recall",
        "delay med/max",
        "lead med/min",
        "warned",
        "alerts/ep",
        "false",
    )
    rows = [head]
    for k in result.kinds:
        leads = [v for v in k.leads_s if v is not None]
        rows.append(
            (
                k.kind,
                str(k.episodes),
                str(k.detected),
                _pct(k.recall),
                _pair(k.delays_s, statistics.median, max),
                _pair(leads, statistics.median, min) if k.kind == "proximity" else "",
                _pct(k.warned_before),
                "-"
                if k.mean_alerts is None
                else f"{k.mean_alerts:.2f} (max {max(k.alerts_per_episode)})",
                str(k.false_alarms),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    fpsd = result.false_per_subject_day
    lines.append("")
    how = (
        "summed over runs"
        if result.exposure == "combined"
        else f"{result.subjects} subjects x {result.span_s / 3600:.1f} h, {result.exposure}"
    )
    lines.append(
        f"exposure: {result.subject_days:.2f} subject-days ({how}); false alarms {len(result.false_alarms)}"
        + ("" if fpsd is None else f" = {fpsd:.2f} per subject-day")
    )
    contact = _contact_summary(result)
    if contact:
        lines.append(contact)
    left_out = Counter(r.episode.excluded for r in result.episodes if r.episode.excluded)
    if left_out:
        why = ", ".join(f"{k} {n}" for k, n in sorted(left_out.items()))
        lines.append(f"left out of 'warned before' (no engine can warn first): {why}")
    lines.extend(format_target(t) for t in result.targets)
    return "\n".join(lines)


def format_target(t: Target) -> str:
    """One target as a line: ``[ok  ]``, ``[FAIL]`` or ``[n/a ]``, its value and goal."""
    mark = {True: "ok  ", False: "FAIL", None: "n/a "}[t.ok]
    return f"  [{mark}] {t.name}: {_target_value(t)} (target {t.goal})"


def _contact_summary(result: ScoreResult) -> str:
    by: dict[str, list[float]] = defaultdict(list)
    missing: dict[str, int] = defaultdict(int)
    for r in result.episodes:
        for k in r.episode.contact_at:
            if k in r.contact_lead_s:
                by[k].append(r.contact_lead_s[k])
            else:
                missing[k] += 1
    parts = []
    for k in sorted(set(by) | set(missing), key=float):
        vals = by.get(k, [])
        warned = sum(1 for v in vals if v >= 0)
        total = len(vals) + missing.get(k, 0)
        med = f", lead med {statistics.median(vals):.0f} s" if vals else ""
        parts.append(f"within {k} m: warned before in {warned}/{total}{med}")
    return "contact: " + "; ".join(parts) if parts else ""


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def _pair(vals: Sequence[float], a: Any, b: Any) -> str:
    return f"{a(vals):.0f}/{b(vals):.0f} s" if vals else "-"


def _target_value(t: Target) -> str:
    if t.value is None:
        return "-"
    return _pct(t.value) if t.percent else f"{t.value:.2f}"
