"""GPS noise whose reported accuracy radius is the noise actually applied.

A fix's ``acc`` is its 68 % horizontal radius (contract §2).  For an isotropic
2-D gaussian error with per-axis standard deviation sigma, the radius r has a
Rayleigh distribution, P(r <= a) = 1 - exp(-a^2 / (2 sigma^2)).  Setting that
to 0.68 gives a = sigma * sqrt(-2 ln 0.32) = 1.5096 sigma.  Drawing the error
with sigma = acc / 1.5096 makes every reported radius honest, so an engine that
weighs accuracy is tested against the noise it was told about.

Errors are correlated in time (GPS errors drift, they do not jump each
second): a unit AR(1) process per axis, scaled per fix by its own sigma.  The
marginal distribution of each fix's error is still exactly N(0, sigma^2) per
axis.  Multipath outliers are the deliberate exception: a fix jumps hundreds
of metres while reporting an ordinary radius, which is what makes them
dangerous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

ACC_TO_SIGMA = math.sqrt(-2.0 * math.log(1.0 - 0.68))  # 1.5096...

Source = Literal["gnss", "wifi", "cell"]


def sigma_for_acc(acc: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """Per-axis standard deviation for a 68 % radius ``acc`` (metres)."""
    return np.asarray(acc, dtype=float) / ACC_TO_SIGMA


def draw_errors(
    rng: np.random.Generator,
    acc: NDArray[np.float64],
    dt: NDArray[np.float64] | None = None,
    tau_s: float = 0.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """East/north errors (metres) for fixes with radii ``acc``.

    ``dt`` holds the seconds between consecutive fixes (length n, first value
    ignored); with ``tau_s`` > 0 the unit errors follow an AR(1) process with
    correlation exp(-dt / tau_s), otherwise they are independent.
    """
    acc = np.asarray(acc, dtype=float)
    n = acc.shape[0]
    z = rng.standard_normal((n, 2))
    if tau_s > 0.0 and n > 1 and dt is not None:
        rho = np.exp(-np.asarray(dt, dtype=float) / tau_s)
        keep = np.sqrt(1.0 - rho * rho)
        u = np.empty_like(z)
        u[0] = z[0]
        for i in range(1, n):
            u[i] = rho[i] * u[i - 1] + keep[i] * z[i]
        z = u
    s = sigma_for_acc(acc)
    return z[:, 0] * s, z[:, 1] * s


@dataclass(frozen=True, slots=True)
class AccuracyBand:
    """Log-uniform range of reported radii for one positioning source."""

    source: Source
    low_m: float
    high_m: float

    def draw(self, rng: np.random.Generator) -> float:
        """One radius, log-uniform in [low_m, high_m]."""
        return float(math.exp(rng.uniform(math.log(self.low_m), math.log(self.high_m))))


# Radii by environment.  Indoors the device falls back to Wi-Fi or cell
# positions with 100-2000 m radii; outdoors GNSS reports metres to tens of metres.
GNSS_OPEN = AccuracyBand("gnss", 3.0, 12.0)
GNSS_URBAN = AccuracyBand("gnss", 6.0, 35.0)
GNSS_INDOOR = AccuracyBand("gnss", 15.0, 60.0)
WIFI = AccuracyBand("wifi", 100.0, 500.0)
WIFI_NEAR = AccuracyBand("wifi", 30.0, 60.0)  # indoors with a dense access-point map (issue 25)
CELL = AccuracyBand("cell", 500.0, 2000.0)

# Source mixtures per environment; a device stays on one source for a while (persistence).
MIXTURES: dict[str, tuple[tuple[AccuracyBand, float], ...]] = {
    "open": ((GNSS_OPEN, 1.0),),
    "urban": ((GNSS_URBAN, 1.0),),
    "indoor": ((GNSS_INDOOR, 0.5), (WIFI, 0.35), (CELL, 0.15)),
    "wifi": ((WIFI, 1.0),),
    "wifi_near": ((WIFI_NEAR, 1.0),),
    "cell": ((CELL, 1.0),),
    "fallback": ((WIFI, 0.7), (CELL, 0.3)),
}
SOURCE_PERSISTENCE = 0.8

SATS_BY_ENV: dict[str, tuple[int, int]] = {"open": (8, 14), "urban": (5, 10), "indoor": (4, 7)}


class AccuracyModel:
    """Draws (source, acc, sats) per fix from the device's environment, with source persistence."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._env: str | None = None
        self._band: AccuracyBand | None = None

    def draw(self, env: str) -> tuple[Source, float, int | None]:
        """Source, reported 68 % radius and satellites used (None off GNSS) for one fix."""
        rng = self._rng
        try:
            mix = MIXTURES[env]
        except KeyError:
            raise ValueError(f"unknown positioning environment {env!r}") from None
        if env != self._env or self._band is None or rng.random() > SOURCE_PERSISTENCE:
            weights = np.array([w for _, w in mix])
            self._band = mix[int(rng.choice(len(mix), p=weights / weights.sum()))][0]
            self._env = env
        band = self._band
        acc = round(band.draw(rng), 1)
        sats = None
        if band.source == "gnss":
            lo, hi = SATS_BY_ENV.get(env, SATS_BY_ENV["indoor"])
            sats = int(rng.integers(lo, hi + 1))
        return band.source, acc, sats


def multipath_offset(
    rng: np.random.Generator,
    jump_m: float = 500.0,
    bearing_deg: float | None = None,
    spread: float = 0.2,
) -> tuple[float, float]:
    """East/north offset of a multipath jump of ``jump_m`` (+- ``spread``) in a given or random bearing."""
    length = jump_m * rng.uniform(1.0 - spread, 1.0 + spread)
    bearing = math.radians(bearing_deg) if bearing_deg is not None else rng.uniform(0, 2 * math.pi)
    return length * math.sin(bearing), length * math.cos(bearing)
