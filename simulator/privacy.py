"""Is the offender's device a distance oracle?  Approaches against decoys, on his channel only.

Issue 25 item 3: whatever reaches the ankle monitor (``em/cmd/subject/…`` prompts and
``em/cmd/device/…`` commands) must not tell him that she is near.  The field-only privacy
test (tests/engine/test_privacy.py) checks that no message *carries* her position; this
measures whether the *timing* of the messages gives her away.

Many seeded runs of one hour each, in two classes with the same offender movement:

* **approach**: she is at home (GNSS or indoor Wi-Fi, 30-60 m); he walks, cycles or drives
  towards her from 4-6 km, stops 30-300 m from her for 5-10 minutes and leaves;
* **decoy**: the same movement, but she is 20 km away (nothing about her is near).

Each run has its own subject and start time, so the engine's random pursuit periods (seeded
by subject and hour) are drawn afresh, as for different people on different days.  The
orders hold the proximity rule only (a ban zone round her home is a place he was told about;
its prompts are not about where she is now).  From each run's offender-channel messages, as
he would see them, come the features: seconds from the start of the run to his first
message, to his first ``set_interval`` faster than normal, to his first ``contact_centre``
(the run length when none), and the number of messages.  For each feature the area under
the ROC curve of the best threshold, ``max(AUC, 1 - AUC)``, separates approach from decoy;
the measure is the largest over the features.  Chance is 0.5.

The bound: with ``n`` runs per class and a channel independent of her, one feature's AUC has
standard deviation ``sqrt((2n + 1) / (12 n^2))`` (Mann-Whitney, no ties; ties make it
smaller), 0.041 at ``n = 100``; ``MAX_AUC`` = 0.6 is 2.4 of those, so four features under the
null stay below it with probability about 0.94, and the runs are seeded, so the test is
deterministic.  A channel that leaks shows: with ``offender_prompt: "auto"`` the same runs
give an AUC near 1 (tests/engine/test_offender_oracle.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from devices.timeutil import format_time, parse_time
from engine.core.config import EngineConfig
from engine.core.orders_load import load_orders
from engine.core.testing import ORIGIN, T0, lonlat
from engine.runtime.replay import replay_messages

RUN_S = 3600.0
MAX_AUC = 0.6  # the bound of the measure (module docstring)
DECOY_OFFSET_M = 20_000.0
FEATURES = ("first_message_s", "first_pursuit_s", "first_contact_s", "messages")
MODES = {"walking": (1.4, 30.0), "cycling": (4.5, 30.0), "driving": (12.0, 30.0)}  # speed, fix every


@dataclass(frozen=True, slots=True)
class OracleResult:
    """The measure on one set of runs."""

    auc: dict[str, float]  # best-threshold AUC per feature
    runs: int  # per class

    @property
    def worst(self) -> float:
        """The largest best-threshold AUC over the features (0.5: chance)."""
        return max(self.auc.values())

    @property
    def ok(self) -> bool:
        """Within the bound."""
        return self.worst <= MAX_AUC


def _run_messages(
    rng: np.random.Generator, i: int, decoy: bool, offender_prompt: str
) -> tuple[list[tuple[float, str, bytes]], dict[str, Any], str, float]:
    """One run's trace, its orders and the offender's device id and start time."""
    subject, device = f"S-{i}", f"AM-{10_000 + i}"
    start = T0 + i * 86_400.0 + float(rng.uniform(0, 86_400))
    mode = ("walking", "cycling", "driving")[i % 3]
    speed, every = MODES[mode]
    speed *= float(rng.uniform(0.85, 1.15))
    bearing = float(rng.uniform(0, 2 * math.pi))
    ux, uy = math.cos(bearing), math.sin(bearing)
    vx0, vy0 = ORIGIN
    far = float(rng.uniform(4000, 6000))
    closest = float(rng.uniform(30, 300))
    dwell = float(rng.uniform(300, 600))
    depart = float(rng.uniform(0, 900))  # he sets off this long after the run starts
    travel = (far - closest) / speed
    indoor = bool(rng.random() < 0.5)
    # her place: at home, or (decoy) 20 km away across the city
    hx, hy = (vx0 + DECOY_OFFSET_M, vy0) if decoy else (vx0, vy0)

    def along(t: float) -> float:
        """His distance from her home (approach) along the line, at run time t."""
        if t < depart:
            return far
        if t < depart + travel:
            return far - speed * (t - depart)
        if t < depart + travel + dwell:
            return closest
        return min(far, closest + speed * (t - depart - travel - dwell))

    msgs: list[tuple[float, str, bytes]] = []
    seq = 0
    t = 0.0
    while t < RUN_S:
        d = along(t)
        acc = float(rng.uniform(4, 15))
        x = vx0 + ux * d + rng.normal(0, acc / 1.5)
        y = vy0 + uy * d + rng.normal(0, acc / 1.5)
        seq += 1
        msgs.append(_fix(device, seq, start + t, x, y, acc, "gnss"))
        t += every
    seq_v, t = 0, float(rng.uniform(0, 60))
    while t < RUN_S:
        acc = float(rng.uniform(30, 60)) if indoor else float(rng.uniform(4, 15))
        seq_v += 1
        msgs.append(
            _fix("VD-1", seq_v, start + t, hx + rng.normal(0, acc / 1.5), hy + rng.normal(0, acc / 1.5),
                 acc, "wifi" if indoor else "gnss")
        )
        t += 60.0
    msgs.sort(key=lambda m: m[0])
    doc = {
        "v": 1,
        "subjects": [{"id": subject, "devices": [device]}],
        "protected_persons": [{"id": "P-1", "devices": ["VD-1"]}],
        "orders": [{
            "id": "O-1", "subject": subject, "legal_basis": "gedragsaanwijzing",
            "valid_from": format_time(start - 86_400), "valid_until": format_time(start + 86_400),
            "offender_prompt": offender_prompt,
            "proximity": [{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}],
        }],
    }
    return msgs, doc, device, start


def _fix(device: str, seq: int, t: float, x: float, y: float, acc: float, src: str) -> tuple[float, str, bytes]:
    lon, lat = lonlat(x, y)
    doc = {"v": 1, "device": device, "seq": seq, "t": format_time(t), "lat": round(lat, 7),
           "lon": round(lon, 7), "acc": round(acc, 1), "src": src}
    return t + 0.5, f"em/dev/{device}/fix", json.dumps(doc).encode()


def offender_features(out: Sequence[dict[str, Any]], device: str, start: float, normal_s: int) -> dict[str, float]:
    """What his channel showed in one run, as numbers (module docstring)."""
    mine = [
        m for m in out
        if m.get("_channel") in ("subject", "device") and str(m.get("_topic", "")).endswith(f"/{device}")
    ]

    def first(pred: Any) -> float:
        times = [parse_time(m["t"]) - start for m in mine if pred(m)]
        return min(times) if times else RUN_S

    return {
        "first_message_s": first(lambda m: True),
        "first_pursuit_s": first(lambda m: m.get("instruction") == "set_interval" and m.get("interval_s", normal_s) < normal_s),
        "first_contact_s": first(lambda m: m.get("instruction") == "contact_centre"),
        "messages": float(len(mine)),
    }


def best_auc(a: Sequence[float], b: Sequence[float]) -> float:
    """``max(AUC, 1 - AUC)`` of the best threshold on one feature (Mann-Whitney, ties half)."""
    wins = 0.0
    for x in a:
        for y in b:
            wins += 1.0 if x > y else 0.5 if x == y else 0.0
    auc = wins / (len(a) * len(b))
    return max(auc, 1.0 - auc)


def measure(runs: int = 100, seed: int = 25, offender_prompt: str = "operator",
            config: EngineConfig | None = None) -> OracleResult:
    """Play ``runs`` approaches and ``runs`` decoys through the engine; the AUC per feature."""
    cfg = config or EngineConfig()
    normal = cfg.rules.normal_interval_s
    feats: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for i in range(runs):
        for decoy in (False, True):
            # the same movement for the pair of runs, a different subject and day for each
            rng = np.random.default_rng([seed, i])
            k = 2 * i + (1 if decoy else 0)
            msgs, doc, device, start = _run_messages(rng, k, decoy, offender_prompt)
            out = replay_messages(msgs, load_orders(doc), cfg, include_messages=True)
            feats[decoy].append(offender_features(out, device, start, normal))
    auc = {f: best_auc([r[f] for r in feats[False]], [r[f] for r in feats[True]]) for f in FEATURES}
    return OracleResult(auc, runs)
