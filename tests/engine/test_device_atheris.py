"""The atheris harness (tests/engine/atheris_device_channels.py) runs clean for a bounded number of inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.core.testing import ORIGIN, T0, DeviceScript

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("atheris_device_channels.py")
RUNS = 5000  # ~2 s here
# libFuzzer dictionary: values at the edges of the limits (devices.validate), for mutations to
# splice in beside the harness's own edge values.  On the code before issue 21 this run stops
# at an OverflowError from state_delta (seq 2**63) in ~2 s.
TOKENS = [
    "9223372036854775807", "9223372036854775808", "18446744073709551616", "-1", "1e999", "NaN",
    "Infinity", "[[[[[[[[", '{"a":', "\\ud800", "\\xff", '"seq":', '"detail":', '"tst":',
]  # fmt: skip


def test_atheris_finds_nothing_in_a_bounded_run(tmp_path: Path) -> None:
    """libFuzzer-guided inputs on every device channel: no crash, every rejection dead-lettered.

    The harness runs in a process of its own (libFuzzer exits the process when it is done),
    with this tree first on the path; a seed corpus of valid payloads starts it near the
    interesting shapes.  A failure leaves its input under ``tmp_path`` and prints it.
    """
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    x, y = ORIGIN
    seeds = [
        DeviceScript("AM-1001", seq=41).fix(T0, x, y)[1],
        DeviceScript("AM-1001", seq=42).event(T0, "strap_open")[1],
        json.dumps({"_type": "location", "lat": 51.9, "lon": 4.4, "tst": int(T0), "acc": 9}).encode(),
    ]
    for i, seed in enumerate(seeds):
        for topic_byte in range(4):
            (corpus / f"seed-{i}-{topic_byte}").write_bytes(bytes([topic_byte, 0, 0]) + seed)
    dictionary = tmp_path / "tokens.dict"
    dictionary.write_text("".join(json.dumps(token) + "\n" for token in TOKENS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [
            sys.executable, str(HARNESS), f"-runs={RUNS}", "-seed=21", "-max_len=4096",
            f"-dict={dictionary}", f"-artifact_prefix={tmp_path}/", str(corpus),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    uncaught = result.stderr.find("=== Uncaught Python exception")
    assert result.returncode == 0, result.stderr[uncaught:][:4000] if uncaught >= 0 else result.stderr[-4000:]
    assert f"Done {RUNS} runs" in result.stderr, result.stderr[-2000:]
