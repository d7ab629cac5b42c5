"""Device health from fixes and events: battery, strap, GNSS, charging, power, silence.

Pure state, no I/O and no clock reads: every input carries its own time.  State
is kept in device time so it is out-of-order safe — each field remembers the
device time of the report that set it, and an older report never overwrites a
newer one (shared subscriptions and buffered bursts deliver out of order).
Silence is measured on the arrival clock instead, because "we have heard
nothing" is about the receiver: a burst that arrives now after an hour offline
means the device is talking again, even though its fixes are an hour old.

Battery runtime is a least-squares line through the recent battery readings
of the current discharge (readings before a charge are dropped), so a device
reporting 1 % steps still gets a usable slope once enough time has passed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from devices.model import DeviceEvent, Fix

BATTERY_WINDOW_S = 3 * 3600.0  # older readings (device time) are not fitted: the drain
# rate changes with the fix interval (pursuit mode), so the estimate must follow it
BATTERY_BUCKET_S = 60.0  # keep at most one reading per minute: bounds memory and fit cost
BATTERY_MAX_SAMPLES = 256
BATTERY_MIN_SPAN_S = 600.0  # need this much device time between first and last reading
BATTERY_MIN_SAMPLES = 3
BATTERY_RISE = 2  # a rise of this many points means it was charged: start a new discharge


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """The latest known health of one device (None: never reported)."""

    device: str
    last_fix_t: float | None
    last_seen_arrival: float | None
    batt: int | None
    strap: str | None
    src: str | None
    acc: float | None
    gnss_lost: bool
    charging: bool
    powered_off: bool


class _HasSilence(Protocol):
    @property
    def device_id(self) -> str: ...
    @property
    def silent_after_s(self) -> float | None: ...


class _Registry(Protocol):
    def devices(self) -> Iterable[_HasSilence]: ...


@dataclass(slots=True)
class _Flag:
    """A boolean whose value is set by the newest report (device time) that spoke about it."""

    value: bool = False
    t: float = float("-inf")

    def set(self, value: bool, t: float) -> None:
        if t >= self.t:
            self.value, self.t = value, t


@dataclass(slots=True)
class _Value:
    """A value set by the newest report (device time) that carried it."""

    value: object = None
    t: float = float("-inf")

    def set(self, value: object, t: float) -> None:
        if value is not None and t >= self.t:
            self.value, self.t = value, t


@dataclass(slots=True)
class _State:
    last_fix_t: float | None = None
    last_seen_arrival: float | None = None
    batt: _Value = field(default_factory=_Value)
    strap: _Value = field(default_factory=_Value)
    src: _Value = field(default_factory=_Value)
    acc: _Value = field(default_factory=_Value)
    gnss_lost: _Flag = field(default_factory=_Flag)
    charging: _Flag = field(default_factory=_Flag)
    powered_off: _Flag = field(default_factory=_Flag)
    discharge_from: float = float("-inf")  # device time the current discharge started
    batt_samples: list[tuple[float, int]] = field(default_factory=list)  # sorted by t
    drain: float | None = None  # cached fit of batt_samples
    drain_valid: bool = False


class HealthTracker:
    """Per-device health, updated from decoded fixes and events in any order.

    ``started_at`` (arrival clock) lets ``silent_devices`` report registered
    devices never heard since start-up; without it they are not reported.
    """

    def __init__(self, started_at: float | None = None) -> None:
        self._state: dict[str, _State] = {}
        self.started_at = started_at

    def _get(self, device: str) -> _State:
        st = self._state.get(device)
        if st is None:
            st = self._state[device] = _State()
        return st

    def _seen(self, st: _State, arrival: float) -> None:
        if st.last_seen_arrival is None or arrival > st.last_seen_arrival:
            st.last_seen_arrival = arrival

    def observe_fix(self, fix: Fix) -> bool:
        """Record a fix; True when it is the newest fix of its device (device time)."""
        st = self._get(fix.device)
        self._seen(st, fix.arrival)
        t = fix.t
        newest = st.last_fix_t is None or t > st.last_fix_t
        if newest:
            st.last_fix_t = t
        st.batt.set(fix.batt, t)
        st.strap.set(fix.strap, t)
        st.src.set(fix.src, t)
        st.acc.set(fix.acc, t)
        if fix.t > st.powered_off.t:  # it reports, so it is on
            st.powered_off.set(False, t)
        if fix.src == "gnss" and fix.t > st.gnss_lost.t:
            st.gnss_lost.set(False, t)
        if fix.batt is not None:
            self._battery_sample(st, t, fix.batt)
        return newest

    def observe_event(self, ev: DeviceEvent) -> None:
        """Record a device event's effect on health (strap, GNSS, charger, power)."""
        st = self._get(ev.device)
        self._seen(st, ev.arrival)
        t, kind = ev.t, ev.type
        if kind == "strap_open":
            st.strap.set("open", t)
        elif kind == "strap_cut":
            st.strap.set("cut", t)
        elif kind == "gnss_lost":
            st.gnss_lost.set(True, t)
        elif kind == "gnss_restored":
            st.gnss_lost.set(False, t)
        elif kind == "charger_connected":
            self._charger(st, True, t)
        elif kind == "charger_disconnected":
            self._charger(st, False, t)
        elif kind == "power_off":
            st.powered_off.set(True, t)
        if kind != "power_off" and t > st.powered_off.t:
            st.powered_off.set(False, t)

    def _charger(self, st: _State, connected: bool, t: float) -> None:
        if t < st.charging.t:
            return
        st.charging.set(connected, t)
        st.discharge_from = t  # both plugging in and unplugging end the current discharge
        st.batt_samples = [s for s in st.batt_samples if s[0] >= t]
        st.drain_valid = False

    def _battery_sample(self, st: _State, t: float, batt: int) -> None:
        """Insert a reading in time order, one per minute bucket (the earliest wins)."""
        if t < st.discharge_from:
            return
        samples = st.batt_samples
        bucket = t // BATTERY_BUCKET_S
        i = bisect.bisect_left(samples, (t, -1))
        if i > 0 and samples[i - 1][0] // BATTERY_BUCKET_S == bucket:
            return  # an earlier reading already stands for this minute
        if i < len(samples) and samples[i][0] // BATTERY_BUCKET_S == bucket:
            if samples[i][0] == t and samples[i][1] <= batt:
                return
            samples[i] = (t, batt)
        else:
            samples.insert(i, (t, batt))
        # A rise means an unreported charge: the discharge restarts at the rise.
        # Earlier pairs were checked when they were inserted, so only the new
        # reading's two neighbours can form a new rise.
        for j in (i + 1, i):
            if 0 < j < len(samples) and samples[j][1] - samples[j - 1][1] >= BATTERY_RISE:
                st.discharge_from = max(st.discharge_from, samples[j][0])
                del samples[:j]
                break
        cut = bisect.bisect_left(samples, (samples[-1][0] - BATTERY_WINDOW_S, -1))
        cut = max(cut, len(samples) - BATTERY_MAX_SAMPLES)
        if cut > 0:
            del samples[:cut]
        st.drain_valid = False

    def snapshot(self, device: str) -> HealthSnapshot:
        """The device's current health; all unknown for a device never observed."""
        st = self._state.get(device)
        if st is None:
            return HealthSnapshot(device, None, None, None, None, None, None, False, False, False)
        return HealthSnapshot(
            device=device,
            last_fix_t=st.last_fix_t,
            last_seen_arrival=st.last_seen_arrival,
            batt=st.batt.value,  # type: ignore[arg-type]
            strap=st.strap.value,  # type: ignore[arg-type]
            src=st.src.value,  # type: ignore[arg-type]
            acc=st.acc.value,  # type: ignore[arg-type]
            gnss_lost=st.gnss_lost.value,
            charging=st.charging.value,
            powered_off=st.powered_off.value,
        )

    def known_devices(self) -> list[str]:
        """Devices observed at least once, in id order."""
        return sorted(self._state)

    def silent_devices(self, now: float, registry: _Registry) -> list[tuple[str, float]]:
        """(device, seconds silent) for registered devices past their silence limit, longest first.

        ``now`` is on the arrival clock.  A device counts from its last message
        of any kind; a device never heard counts from ``started_at`` (if set).
        """
        out: list[tuple[str, float]] = []
        for info in registry.devices():
            st = self._state.get(info.device_id)
            last = st.last_seen_arrival if st is not None else None
            if last is None:
                last = self.started_at
            if last is None or info.silent_after_s is None:
                continue
            silent_for = now - last
            if silent_for > info.silent_after_s:
                out.append((info.device_id, silent_for))
        out.sort(key=lambda item: (-item[1], item[0]))
        return out

    def battery_drain_per_s(self, device: str) -> float | None:
        """Battery points lost per second of device time in the current discharge, if measurable."""
        st = self._state.get(device)
        if st is None or st.charging.value:
            return None
        if not st.drain_valid:
            st.drain, st.drain_valid = _fit_drain(st.batt_samples), True
        return st.drain

    def battery_runtime_s(self, device: str) -> float | None:
        """Estimated device-time seconds from the latest battery reading until 0 %.

        None when unknown: charging, too few readings, too short a span, or not draining.
        """
        drain = self.battery_drain_per_s(device)
        if drain is None:
            return None
        return self._state[device].batt_samples[-1][1] / drain


def _fit_drain(samples: list[tuple[float, int]]) -> float | None:
    """Minus the least-squares slope of battery over time, or None if unmeasurable or not draining."""
    if len(samples) < BATTERY_MIN_SAMPLES or samples[-1][0] - samples[0][0] < BATTERY_MIN_SPAN_S:
        return None
    n = len(samples)
    mt = sum(s[0] for s in samples) / n
    mb = sum(s[1] for s in samples) / n
    sxx = sum((s[0] - mt) ** 2 for s in samples)
    sxy = sum((s[0] - mt) * (s[1] - mb) for s in samples)
    slope = sxy / sxx
    return -slope if slope < 0 else None
