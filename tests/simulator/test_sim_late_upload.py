"""A device back from an outage uploads its buffer messily (issue 25): shuffled, single fixes
and arrays, spread over seconds, partly twice; the plain upload stays as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devices.timeutil import parse_time
from simulator.generate import simulate

BASE: dict[str, Any] = {
    "v": 1, "seed": 5, "start": "2026-11-24T05:00:00Z", "duration": "3h",
    "noise": {"enabled": False},
}


def _burst(tmp_path: Path, **upload: Any) -> tuple[list[dict[str, Any]], int]:
    """The subject's fix messages arriving after the outage, and how many fixes it buffered."""
    doc = BASE | {"events": [{"type": "offline", "subject": "S-1", "from": "07:00", "to": "08:00", **upload}]}
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps(doc))
    trace, truth, orders = tmp_path / "t.jsonl", tmp_path / "truth.jsonl", tmp_path / "o.json"
    simulate(scenario, trace, truth, orders, None)
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    fixes = [m for m in lines if m["topic"] == "em/dev/AM-1001/fix"]
    back = parse_time("2026-11-24T07:00:00Z")
    burst = [m for m in fixes if parse_time(m["arrival"]) >= back and
             (isinstance(m["payload"], list) or parse_time(m["payload"]["t"]) < back)]
    buffered = {
        f["seq"] for m in burst for f in (m["payload"] if isinstance(m["payload"], list) else [m["payload"]])
    }
    return burst, len(buffered)


def test_the_plain_upload_is_arrays_in_order_a_tenth_of_a_second_apart(tmp_path: Path) -> None:
    burst, n = _burst(tmp_path, chunk=20)
    assert n == 60 and all(isinstance(m["payload"], list) for m in burst)
    seqs = [f["seq"] for m in burst for f in m["payload"]]
    assert seqs == sorted(seqs) and [len(m["payload"]) for m in burst] == [20, 20, 20]


def test_a_messy_upload_is_shuffled_mixed_spread_and_partly_sent_twice(tmp_path: Path) -> None:
    burst, n = _burst(
        tmp_path, shuffle=True, chunk=[1, 12], singles_p=0.4, spread_s=30, repeat_p=0.5
    )
    assert n == 60
    singles = [m for m in burst if isinstance(m["payload"], dict)]
    arrays = [m for m in burst if isinstance(m["payload"], list)]
    assert singles and arrays
    seqs = [f["seq"] for m in burst for f in (m["payload"] if isinstance(m["payload"], list) else [m["payload"]])]
    assert len(seqs) > n and sorted(set(seqs)) != seqs  # repeated, and not in order
    arrivals = sorted(parse_time(m["arrival"]) for m in burst)
    assert 10.0 < arrivals[-1] - arrivals[0] <= 60.0  # spread over seconds, two uploads
