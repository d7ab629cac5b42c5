"""Certainty of a spatial condition given the accuracy radii of the fixes (contract §5).

Vocabulary from the Common Alerting Protocol:

* ``observed``: true even at the worst case of the accuracy radii;
* ``likely``: true at the best estimate (the reported positions);
* ``possible``: true only somewhere within the accuracy radii.

Accuracy is the device's 68 % horizontal radius, used as given.  A point on
a zone boundary counts as inside (``signed_distance <= 0``).
"""

from __future__ import annotations

from typing import Literal

Certainty = Literal["observed", "likely", "possible"]

CERTAINTY_RANK: dict[str, int] = {"possible": 1, "likely": 2, "observed": 3}


def inside_certainty(signed_distance_m: float, acc_m: float) -> Certainty | None:
    """Certainty that a fix is inside a zone, from its signed distance (<= 0 inside)."""
    if signed_distance_m <= -acc_m:
        return "observed"
    if signed_distance_m <= 0.0:
        return "likely"
    if signed_distance_m <= acc_m:
        return "possible"
    return None


def outside_certainty(signed_distance_m: float, acc_m: float) -> Certainty | None:
    """Certainty that a fix is outside a zone (for inclusion zones / curfews)."""
    return inside_certainty(-signed_distance_m, acc_m) if signed_distance_m != 0.0 else None


def within_certainty(
    distance_m: float, threshold_m: float, acc_a_m: float, acc_b_m: float
) -> Certainty | None:
    """Certainty that two devices are within ``threshold_m`` of each other."""
    slack = acc_a_m + acc_b_m
    if distance_m + slack <= threshold_m:
        return "observed"
    if distance_m <= threshold_m:
        return "likely"
    if distance_m - slack <= threshold_m:
        return "possible"
    return None
