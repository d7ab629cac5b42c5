"""The standard scenario suite: generate each scenario, replay it through the engine, score it.

``python -m simulator.suite --out DIR`` (or ``emguard suite``) writes, per
scenario, ``NAME.trace.jsonl``, ``NAME.truth.jsonl``, ``NAME.orders.json``,
``NAME.alerts.jsonl`` and (with ``--report``) ``NAME.html`` into DIR, and
prints one row per scenario plus the combined per-kind table with the
quality targets; the whole suite also plays approaches against decoys and measures whether
the offender's channel tells them apart (simulator/privacy.py).  The engine is reached only through
``engine.runtime.replay.replay_trace(trace_path, orders_path) -> list[dict]``; any
function of that shape can be passed instead (tests, other engines).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.runtime.replay import replay_trace, write_alerts
from simulator.generate import Summary, simulate
from simulator.privacy import MAX_AUC, OracleResult, measure
from simulator.score import TARGET_ALERTS_PER_EPISODE, ScoreResult, Target, combine
from simulator.scoring import score_files
from simulator.tables import format_table, format_target

SCENARIO_DIR = Path(__file__).with_name("scenarios")
#: the scenarios whose data arrives late, reordered and repeated (issue 25): their alerts per
#: episode have a target of their own, so the on-time scenarios cannot hide a split episode
LATE_DATA_SCENARIOS = ("late_burst", "late_repeat", "late_shuffled")
Replay = Callable[[Path, Path], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class SuiteRow:
    """One scenario's run."""

    name: str
    summary: Summary
    result: ScoreResult
    alerts_path: Path
    seconds: float


@dataclass(frozen=True, slots=True)
class SuiteResult:
    """Every scenario's run and all of them scored as one (and, when asked, the offender-channel
    measure: simulator/privacy.py)."""

    rows: tuple[SuiteRow, ...]
    combined: ScoreResult
    oracle: OracleResult | None = None

    @property
    def ok(self) -> bool:
        """No measured target failed."""
        return all(t.ok is not False for t in self.targets) and (
            self.oracle is None or self.oracle.ok
        )

    @property
    def targets(self) -> tuple[Target, ...]:
        """The combined run's targets, and alerts per episode on the late-data scenarios."""
        counts = [
            n for r in self.rows if r.name in LATE_DATA_SCENARIOS
            for k in r.result.kinds for n in k.alerts_per_episode
        ]
        m = sum(counts) / len(counts) if counts else None
        late = Target(
            "alerts per episode, late-data scenarios", m, f"<= {TARGET_ALERTS_PER_EPISODE}",
            None if m is None else m <= TARGET_ALERTS_PER_EPISODE,
        )
        return (*self.combined.targets, late)


def scenario_files(names: Sequence[str] | None = None) -> list[Path]:
    """The suite's scenario files (all, or those named), in name order."""
    files = sorted(SCENARIO_DIR.glob("*.json"))
    if not names:
        return files
    by_name = {f.stem: f for f in files}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SystemExit(f"unknown scenarios {missing} (have {sorted(by_name)})")
    return [by_name[n] for n in names]


def engine_replay(trace: Path, orders: Path) -> list[dict[str, Any]]:
    """The engine's deterministic replay."""
    return replay_trace(trace, orders)


def run_suite(
    out_dir: str | Path,
    *,
    scenarios: Sequence[str | Path] | None = None,
    seed: int | None = None,
    replay: Replay = engine_replay,
    report: bool = False,
    privacy: bool = False,
) -> SuiteResult:
    """Generate, replay and score each scenario (default: the whole standard suite); with
    ``privacy`` also the engine's offender-channel measure (approaches against decoys)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = (
        [Path(s) if Path(s).suffix else scenario_files([str(s)])[0] for s in scenarios]
        if scenarios
        else scenario_files()
    )
    rows = []
    for f in files:
        started = time.perf_counter()
        name = f.stem
        trace, truth = out / f"{name}.trace.jsonl", out / f"{name}.truth.jsonl"
        orders, alerts = out / f"{name}.orders.json", out / f"{name}.alerts.jsonl"
        summary = simulate(f, trace, truth, orders, seed)
        write_alerts(replay(trace, orders), alerts)
        result = score_files(
            alerts, truth, out / f"{name}.html" if report else None, trace=trace, orders=orders
        )
        rows.append(SuiteRow(name, summary, result, alerts, time.perf_counter() - started))
    oracle = measure() if privacy else None
    return SuiteResult(tuple(rows), combine([(r.name, r.result) for r in rows]), oracle)


def format_suite(result: SuiteResult) -> str:
    """One row per scenario, then the combined table and targets."""
    head = ("scenario", "episodes", "missed", "warned", "false", "false/subj-day", "alerts/ep", "s")
    rows = [head]
    for r in result.rows:
        s = r.result
        episodes = len(s.episodes)
        missed = sum(1 for e in s.episodes if not e.detected)
        prox = s.kind("proximity")
        warned = prox.warned_before if prox else None
        counts = [n for k in s.kinds for n in k.alerts_per_episode]
        fpsd = s.false_per_subject_day
        rows.append(
            (
                r.name,
                str(episodes),
                str(missed),
                "-" if warned is None else f"{100 * warned:.0f} %",
                str(len(s.false_alarms)),
                "-" if fpsd is None else f"{fpsd:.2f}",
                "-" if not counts else f"{sum(counts) / len(counts):.2f}",
                f"{r.seconds:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    extra = [format_target(t) for t in result.targets[len(result.combined.targets) :]]
    tail = [format_table(result.combined), *extra]
    if result.oracle is not None:
        o = result.oracle
        mark = "ok  " if o.ok else "FAIL"
        tail.append(
            f"  [{mark}] offender channel, approach vs decoy (best-threshold AUC, "
            f"{o.runs} runs each): {o.worst:.2f} (target <= {MAX_AUC}, chance 0.5)"
        )
    return "\n".join([*lines, "", "all scenarios:", *tail])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the suite and print the tables; exit 1 if a quality target fails."""
    ap = argparse.ArgumentParser(
        prog="python -m simulator.suite", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", required=True, help="directory for traces, truth, alerts and reports")
    ap.add_argument(
        "--scenario", action="append", help="run only this scenario (name or file); repeatable"
    )
    ap.add_argument("--seed", type=int, default=None, help="override every scenario's seed")
    ap.add_argument("--report", action="store_true", help="write an HTML report per scenario")
    ap.add_argument(
        "--no-privacy", action="store_true",
        help="skip the offender-channel measure (it runs with the whole suite)",
    )
    args = ap.parse_args(argv)
    result = run_suite(
        args.out, scenarios=args.scenario, seed=args.seed, report=args.report,
        privacy=not args.scenario and not args.no_privacy,
    )
    print(format_suite(result))
    return 0 if result.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
