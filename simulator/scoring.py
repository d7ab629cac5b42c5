"""Scoring from files: an alerts file against a truth file, with the HTML report if asked.

The measures are in ``simulator.score`` and the report in ``simulator.report``; this module is
what ``emguard score`` and ``emguard suite`` call, so neither of those needs the other.
"""

from __future__ import annotations

from pathlib import Path

from simulator.report import write_report
from simulator.score import (
    DEFAULT_LEAD_WINDOW_S,
    DEFAULT_TOLERANCE_S,
    ScoreResult,
    alert_episodes,
    exposure_of,
    read_alerts,
    score,
)
from simulator.truth import read_truth


def score_files(
    alerts: str | Path,
    truth: str | Path,
    report: str | Path | None = None,
    *,
    trace: str | Path | None = None,
    orders: str | Path | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    lead_window_s: float = DEFAULT_LEAD_WINDOW_S,
) -> ScoreResult:
    """Score an alerts file against a truth file; write an HTML report if ``report`` is given.

    ``trace`` and ``orders`` give the exposure (subjects x time span) for false
    alarms per subject-day and the tracks and zones of the report's map;
    without them the exposure is estimated from the truth and alerts.
    """
    grouped = alert_episodes(read_alerts(alerts))
    episodes = read_truth(truth)
    subjects, span, source = exposure_of(episodes, grouped, trace, orders)
    result = score(
        grouped,
        episodes,
        subjects=subjects,
        span_s=span,
        exposure=source,
        tolerance_s=tolerance_s,
        lead_window_s=lead_window_s,
    )
    if report is not None:
        write_report(result, report, trace=trace, orders=orders)
    return result
