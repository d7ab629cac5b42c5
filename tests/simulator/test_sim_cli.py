"""The click commands the emguard entry point attaches: simulate, score, suite, import-track, publish."""

from __future__ import annotations

import json

from click.testing import CliRunner

from engine.runtime.broker import free_port
from simulator.cli_commands import (
    COMMANDS,
    import_track_command,
    publish_command,
    score_command,
    simulate_command,
    suite_command,
)
from simulator.suite import SCENARIO_DIR


def test_commands_have_the_contract_names():
    """emguard simulate / publish / score / suite / import-track."""
    assert [c.name for c in COMMANDS] == ["simulate", "publish", "score", "suite", "import-track"]


def test_simulate_then_score_on_the_command_line(tmp_path):
    """simulate writes trace, truth and orders; score prints the table, writes HTML and JSON, --check gates."""
    runner = CliRunner()
    trace, truth, orders = tmp_path / "t.jsonl", tmp_path / "truth.jsonl", tmp_path / "o.json"
    res = runner.invoke(
        simulate_command,
        [
            str(SCENARIO_DIR / "exclusion_breach.json"),
            "--out",
            str(trace),
            "--truth",
            str(truth),
            "--orders",
            str(orders),
            "--seed",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "true episodes: exclusion 2" in res.output and orders.exists()
    alerts = tmp_path / "a.jsonl"
    alerts.write_text("")
    args = [
        "--alerts",
        str(alerts),
        "--truth",
        str(truth),
        "--trace",
        str(trace),
        "--orders",
        str(orders),
    ]
    res = runner.invoke(
        score_command,
        [*args, "--report", str(tmp_path / "r.html"), "--json", str(tmp_path / "s.json")],
    )
    assert res.exit_code == 0, res.output
    assert "exclusion  2" in res.output and "[FAIL] exclusion recall: 0 %" in res.output
    assert json.loads((tmp_path / "s.json").read_text())["kinds"]["exclusion"]["detected"] == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert runner.invoke(score_command, [*args, "--check"]).exit_code == 1


def test_simulate_reports_scenario_errors_without_a_traceback(tmp_path):
    """A broken scenario is a one-line error and exit code 1."""
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"events": [{"type": "teleport"}]}))
    res = CliRunner().invoke(
        simulate_command, [str(bad), "--out", str(tmp_path / "t"), "--truth", str(tmp_path / "u")]
    )
    assert (
        res.exit_code == 1 and "unknown event type" in res.output and "Traceback" not in res.output
    )


def test_import_track_command(tmp_path):
    """A CSV becomes a trace."""
    src = tmp_path / "d.csv"
    src.write_text("device,t,lat,lon,acc\nAM-1,2026-11-23T10:00:00Z,51.9,4.4,8\n")
    res = CliRunner().invoke(import_track_command, [str(src), "--out", str(tmp_path / "t.jsonl")])
    assert res.exit_code == 0 and "1 fixes written" in res.output
    assert json.loads((tmp_path / "t.jsonl").read_text())["topic"] == "em/dev/AM-1/fix"


def test_publish_command_fails_cleanly_without_a_broker(tmp_path):
    """No broker listening: a clear error, exit 1."""
    port = free_port()
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        json.dumps({"arrival": "2026-11-23T10:00:00Z", "topic": "em/dev/A/fix", "payload": {}})
        + "\n"
    )
    res = CliRunner().invoke(
        publish_command, [str(trace), "--broker", f"mqtt://127.0.0.1:{port}", "--speed", "0"]
    )
    assert res.exit_code == 1 and "cannot connect" in res.output


def test_suite_command_runs_one_scenario(tmp_path):
    """suite prints the per-scenario row and the combined targets; exit 1 only on a failed target."""
    res = CliRunner().invoke(
        suite_command, ["--out", str(tmp_path), "--scenario", "victim_device_home"]
    )
    assert "victim_device_home" in res.output and "all scenarios:" in res.output
    assert res.exit_code == (1 if "[FAIL]" in res.output else 0)
