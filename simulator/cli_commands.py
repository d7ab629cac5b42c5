"""Click commands for ``emguard``: simulate, publish, score, suite, import-track.

The console entry point lives in ``engine.tools.cli``; it attaches these with
``main.add_command(...)`` (see ``COMMANDS``), so the simulator's options are
defined and tested next to the code they drive.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from simulator.errors import SimulatorError

FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUT = click.Path(dir_okay=False, path_type=Path)


@click.command("simulate")
@click.argument("scenario", type=FILE)
@click.option("--out", required=True, type=OUT, help="Trace to write (JSON Lines, arrival order).")
@click.option("--truth", required=True, type=OUT, help="Ground truth to write (JSON Lines).")
@click.option(
    "--orders", "orders_out", type=OUT, default=None, help="Orders file the scenario implies."
)
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
def simulate_command(
    scenario: Path, out: Path, truth: Path, orders_out: Path | None, seed: int | None
) -> None:
    """Generate a scenario's trace and ground truth (same seed, same bytes)."""
    from simulator.generate import simulate

    try:
        summary = simulate(scenario, out, truth, orders_out, seed)
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary.text(), err=True)


@click.command("publish")
@click.argument("trace", type=FILE)
@click.option(
    "--broker",
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="mqtt://[user:pass@]host:port",
)
@click.option(
    "--speed", default=60.0, show_default=True, help="Time scale; 0 = as fast as possible."
)
@click.option("--qos", default=1, show_default=True, type=click.IntRange(0, 2))
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.option(
    "--shift-to-now",
    is_flag=True,
    help="Move device times so the trace starts now, spacing kept (needs --speed 1): a live "
    "engine then sees it as recorded instead of everything late.",
)
def publish_command(
    trace: Path, broker: str, speed: float, qos: int, quiet: bool, shift_to_now: bool
) -> None:
    """Play a trace onto a broker in (scaled) real time (MQTT v5, falling back to 3.1.1)."""
    from simulator.publish import publish_trace

    try:
        asyncio.run(
            publish_trace(
                trace, broker, speed, qos=qos, progress=not quiet, shift_to_now=shift_to_now
            )
        )
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("score")
@click.option("--alerts", required=True, type=FILE, help="Alert state changes (replay output).")
@click.option("--truth", required=True, type=FILE, help="Ground truth from simulate.")
@click.option("--report", type=OUT, default=None, help="Write a self-contained HTML report.")
@click.option(
    "--trace", type=FILE, default=None, help="The trace: exposure and the report's tracks."
)
@click.option(
    "--orders", type=FILE, default=None, help="The orders: subject count and the report's zones."
)
@click.option(
    "--tolerance", default=120.0, show_default=True, help="Seconds of slack after an episode."
)
@click.option(
    "--lead-window",
    default=3600.0,
    show_default=True,
    help="Seconds before an episode an alert may open.",
)
@click.option("--json", "json_out", type=OUT, default=None, help="Write the scores as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when a quality target fails.")
def score_command(
    alerts: Path,
    truth: Path,
    report: Path | None,
    trace: Path | None,
    orders: Path | None,
    tolerance: float,
    lead_window: float,
    json_out: Path | None,
    check: bool,
) -> None:
    """Recall, detection delay, lead time, false alarms and flapping per alert kind."""
    from simulator.scoring import score_files
    from simulator.tables import format_table, result_summary

    try:
        result = score_files(
            alerts,
            truth,
            report,
            trace=trace,
            orders=orders,
            tolerance_s=tolerance,
            lead_window_s=lead_window,
        )
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result_summary(result), indent=2) + "\n", encoding="utf-8")
    if check and any(t.ok is False for t in result.targets):
        raise SystemExit(1)


@click.command("suite")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory.",
)
@click.option(
    "--scenario", "scenarios", multiple=True, help="Only this scenario (name or file); repeatable."
)
@click.option("--seed", type=int, default=None, help="Override every scenario's seed.")
@click.option("--report", is_flag=True, help="Write an HTML report per scenario.")
@click.option(
    "--no-privacy", is_flag=True,
    help="Skip the offender-channel measure (approaches vs decoys; runs with the whole suite).",
)
def suite_command(
    out: Path, scenarios: tuple[str, ...], seed: int | None, report: bool, no_privacy: bool
) -> None:
    """Generate, replay and score the standard scenarios; exit 1 when a quality target fails."""
    from simulator.suite import format_suite, run_suite

    try:
        result = run_suite(
            out, scenarios=list(scenarios) or None, seed=seed, report=report,
            privacy=not scenarios and not no_privacy,
        )
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_suite(result))
    if not result.ok:
        raise SystemExit(1)


@click.command("import-track")
@click.argument("track", type=FILE)
@click.option("--out", required=True, type=OUT, help="Trace to write.")
@click.option("--device", default=None, help="Device id (required for GPX; selects rows of a CSV).")
@click.option(
    "--format", "fmt", type=click.Choice(["gpx", "csv"]), default=None, help="Default: by suffix."
)
@click.option(
    "--acc", default=10.0, show_default=True, help="Accuracy (m) where the track gives none."
)
@click.option("--latency", default=0.5, show_default=True, help="Seconds from fix to arrival.")
def import_track_command(
    track: Path, out: Path, device: str | None, fmt: str | None, acc: float, latency: float
) -> None:
    """Turn a GPX or CSV track into a trace of fixes."""
    from simulator.importers import import_track

    try:
        n = import_track(track, out, device, fmt=fmt, acc_default=acc, latency_s=latency)
    except SimulatorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{n} fixes written to {out}", err=True)


COMMANDS = (simulate_command, publish_command, score_command, suite_command, import_track_command)
