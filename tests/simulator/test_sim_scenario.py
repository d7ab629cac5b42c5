"""Scenario files: time forms, references and the errors that say what to fix."""

from __future__ import annotations

import json

import pytest

from devices.timeutil import parse_time
from simulator.errors import ScenarioError
from simulator.generate import generate
from simulator.scenario import load_scenario, parse_duration, parse_when

START = parse_time("2026-11-23T17:00:00Z")  # 18:00 in Amsterdam


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90, "2026-11-23T17:01:30Z"),
        ("+1h30m", "2026-11-23T18:30:00Z"),
        ("+45s", "2026-11-23T17:00:45Z"),
        ("21:40", "2026-11-23T20:40:00Z"),
        ("02:00", "2026-11-24T01:00:00Z"),  # next occurrence after the start
        ("d1 02:00", "2026-11-24T01:00:00Z"),
        ("d0 18:00", "2026-11-23T17:00:00Z"),
        ("2026-11-23T19:00:00Z", "2026-11-23T19:00:00Z"),
    ],
)
def test_time_forms(value, expected):
    """Seconds, offsets, local wall-clock times and RFC 3339 all resolve to UTC instants."""
    assert parse_when(value, START, "Europe/Amsterdam", "t") == parse_time(expected)


@pytest.mark.parametrize("value", ["soon", "25:00", "+1x", True, None])
def test_bad_times_are_refused(value):
    """Unreadable times name the forms that work."""
    with pytest.raises(ScenarioError):
        parse_when(value, START, "Europe/Amsterdam", "event #0")


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h30m", 5400.0), ("45m", 2700.0), ("90s", 90.0), (120, 120.0)]
)
def test_durations(text, seconds):
    """Durations in seconds or h/m/s text."""
    assert parse_duration(text, "d") == seconds


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"events": [{"type": "teleport", "subject": "S-1", "at": "+1h"}]}, "unknown event type"),
        (
            {
                "events": [
                    {"type": "exclusion_breach", "subject": "S-1", "at": "+1h", "zone": "Z-nope"}
                ]
            },
            "no zone 'Z-nope'",
        ),
        ({"events": [{"type": "approach", "subject": "S-9", "at": "+1h"}]}, "unknown person 'S-9'"),
        ({"events": [{"type": "approach", "subject": "S-1", "at": "+9h"}]}, "outside the scenario"),
        (
            {"events": [{"type": "trip", "subject": "S-1", "at": "+1h", "to": "atlantis"}]},
            "unknown place 'atlantis'",
        ),
        (
            {"events": [{"type": "tamper", "subject": "S-1", "at": "+1h", "kind": "strap_melt"}]},
            "kind must be",
        ),
        (
            {"events": [{"type": "gps_loss", "device": "XX-1", "from": "+1h", "to": "+2h"}]},
            "unknown device",
        ),
        (
            {"events": [{"type": "approach", "subject": "S-1", "at": "+1h", "mode": "flying"}]},
            "unknown travel mode",
        ),
        (
            {
                "orders": [
                    {
                        "id": "O-1",
                        "subject": "S-1",
                        "proximity": [{"protected_person": "P-1", "alert_m": -5}],
                    }
                ]
            },
            "orders are invalid",
        ),
        ({"subjects": [{"id": "S-1", "devices": ["AM-1"]}]}, "needs a 'home'"),
        ({"city": "atlantis"}, "unknown city"),
        ({"duration": "-1h"}, "bad duration"),
        ({"delivery": {"duplicate_p": 2}}, "probability"),
    ],
)
def test_scenario_mistakes_fail_with_a_message_that_names_them(tmp_path, patch, message):
    """Every mistake is a ScenarioError naming the event, person, place or field."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"duration": "6h", **patch}))
    with pytest.raises(ScenarioError, match=message):
        generate(load_scenario(path))


def test_unreadable_files(tmp_path):
    """Missing file and broken JSON are scenario errors with the file name."""
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScenarioError, match=r"bad\.json: not valid JSON"):
        load_scenario(bad)


def test_seed_argument_overrides_the_file():
    """--seed wins over the file's seed; the file's name is the default scenario name."""
    from simulator.suite import SCENARIO_DIR

    sc = load_scenario(SCENARIO_DIR / "passby.json", seed=5)
    assert (sc.seed, sc.name) == (5, "passby")
