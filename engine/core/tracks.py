"""Per-device intake in device time: duplicates, a reorder buffer, the jump filter, a short track.

Fixes arrive late, duplicated and out of order (devices buffer offline and
upload in bursts; shared subscriptions reorder).  A live fix (arriving within
``late_after_s`` of its device time) that continues the device's sequence
numbers without a gap is evaluated at once: nothing that could come before it
is missing, and an alert should not wait.  A late upload is still gathered, so
that its fixes are judged together.  Otherwise the device's fixes wait in a small
buffer until the gap is filled, or the device has been quiet for
``reorder_quiet_s`` (or at most ``reorder_max_hold_s``); the buffer is then
released sorted by device time, so any shuffle of arrivals within that window
gives the same decisions.

A late upload (issue 25) gets a longer window: a device back from an outage uploads its
buffer as several messages (arrays and single fixes, shuffled, some repeated by a second
upload) over up to half a minute, and often sends a live fix before the buffer is through.
While the waiting fixes are late (``holds_late``) and a seq between the last one released
and the highest waiting is still unknown (``gap_closed``), they wait for the missing ones, up
to ``late_quiet_s`` of quiet or ``late_max_hold_s`` in all.  So however the burst is cut up
and ordered, the rules see it once, in device time, as if it had come in order; a stretch
released before the rest of its burst would have let an older fix outside "end" an episode
that was still going on, and the next fix inside open a new one.
A fix older than the newest one already evaluated (one that missed even that window) is
still evaluated (it may reveal a past violation) but marked late and not allowed to move
the track back.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from math import hypot
from operator import attrgetter

from devices.model import Fix
from engine.core.config import RuleConfig
from geo.errors import GeoError
from geo.proximity import (
    DEFAULT_MIN_SPEED_MPS,
    PREDICT_AFTER,
    PREDICT_BEFORE,
    PREDICT_BETWEEN,
    predict_from_two,
)

SEEN_SEQS = 8192  # duplicate memory per device
# A seq already seen (or below the device's highest) is a restart, not a duplicate, when its
# device time is later than every time the device sent before by more than this: a duplicate
# repeats its (seq, t), and an older fix delivered late has an older time (issue 21).
RESTART_MIN_ADVANCE_S = 1.0
# what ``DeviceTrack.admit`` made of a seq
SEQ_NEW = 0
SEQ_DUPLICATE = 1
SEQ_RESTART = 2
TRACK_POINTS = 64  # projected points kept per device for interpolation
TRACK_SPAN_S = 1800.0  # ... and at most this far back in device time


@dataclass(slots=True, init=False, unsafe_hash=True)
class TrackPoint:
    """A fix accepted for decisions, in projected metres; never changed once made (a written
    ``__init__``, not ``frozen``: see engine.tools.native)."""

    t: float
    x: float
    y: float
    acc: float
    key: str
    src: str

    def __init__(self, t: float, x: float, y: float, acc: float, key: str, src: str) -> None:
        self.t = t
        self.x = x
        self.y = y
        self.acc = acc
        self.key = key
        self.src = src


class SeqMemory:
    """The last ``limit`` distinct sequence numbers of a device; the oldest is forgotten first.

    A set answers "seen before?"; beside it the numbers are kept as runs of consecutive
    values in arrival order.  A device counts up, so that is one run, and the memory is
    stored as its runs (``runs``, ``from_runs``), a few bytes instead of 8,192 integers: a
    device's state is stored with every commit that touches its case (engine.core.case_state).
    """

    __slots__ = ("_runs", "_seen", "limit")

    def __init__(self, limit: int = 8192) -> None:
        self.limit = limit
        self._seen: set[int] = set()
        self._runs: deque[list[int]] = deque()  # [first, last] in arrival order

    def __contains__(self, seq: int) -> bool:
        return seq in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, seq: int) -> None:
        """Remember a number not seen before (the caller checked); forget the oldest beyond ``limit``."""
        self._seen.add(seq)
        runs = self._runs
        if runs and runs[-1][1] + 1 == seq:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
        if len(self._seen) > self.limit:
            first = runs[0]
            self._seen.discard(first[0])
            first[0] += 1
            if first[0] > first[1]:
                runs.popleft()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqMemory) and (self.limit, self._runs) == (other.limit, other._runs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SeqMemory(limit={self.limit}, runs={self.runs()})"

    def runs(self) -> list[tuple[int, int]]:
        """The remembered numbers as runs ``(first, last)`` of consecutive values, in arrival order."""
        return [(run[0], run[1]) for run in self._runs]

    @classmethod
    def from_runs(cls, limit: int, runs: list[tuple[int, int]]) -> SeqMemory:
        """The memory that ``runs`` describes (the inverse of ``runs``)."""
        memory = cls(limit)
        for first, last in runs:
            memory._runs.append([first, last])
            memory._seen.update(range(first, last + 1))
        return memory


@dataclass(slots=True, init=False)
class DeviceTrack:
    """What the engine remembers of one device between fixes (a written ``__init__``:
    engine.tools.native)."""

    device: str
    seen: SeqMemory
    pending: list[Fix]
    first_pending_arrival: float
    last_pending_arrival: float
    # accepted points in ascending device time, at most TRACK_POINTS: a list, not a bounded
    # deque (``_insert`` keeps the bound), so that the compiled build reads it with native
    # list operations; every proximity reading walks it from the newest end
    points: list[TrackPoint]
    newest_t: float
    last_arrival: float
    suspect: list[TrackPoint]
    last_seq: int | None  # highest seq evaluated (fixes) or processed (events)
    # messages on the device's own topic rejected without a readable seq since the last release:
    # each took a seq nobody can name, so as many missing seqs need not be waited for
    unnumbered: int
    # the newest device time of any fix or event taken in (duplicates aside), -inf before one:
    # a seq seen before with a later time than this is a restart of the device's numbering
    newest_seen_t: float
    # the latest arrival of a fix released for evaluation, -inf before one: a reception gap is
    # measured from here (engine.core.rules.crossings.report_reception_gap), so the second part of
    # a burst released in two steps is not reported as a gap of its own
    released_arrival: float
    # the highest seq of a fix released for evaluation (None before one): ``gap_closed`` looks
    # for missing seqs from here, not from ``last_seq``, which an event may have moved past
    # fixes of a burst still on their way
    released_seq: int | None

    def __init__(
        self, device: str, seen: SeqMemory | None = None, pending: list[Fix] | None = None,
        first_pending_arrival: float = 0.0, last_pending_arrival: float = 0.0,
        points: list[TrackPoint] | None = None, newest_t: float = -math.inf,
        last_arrival: float = -math.inf, suspect: list[TrackPoint] | None = None,
        last_seq: int | None = None, unnumbered: int = 0, newest_seen_t: float = -math.inf,
        released_arrival: float = -math.inf, released_seq: int | None = None,
    ) -> None:
        self.device = device
        self.seen = SeqMemory(SEEN_SEQS) if seen is None else seen
        self.pending = [] if pending is None else pending
        self.first_pending_arrival = first_pending_arrival
        self.last_pending_arrival = last_pending_arrival
        self.points = [] if points is None else points
        self.newest_t = newest_t
        self.last_arrival = last_arrival
        self.suspect = [] if suspect is None else suspect
        self.last_seq = last_seq
        self.unnumbered = unnumbered
        self.newest_seen_t = newest_seen_t
        self.released_arrival = released_arrival
        self.released_seq = released_seq

    def is_duplicate(self, seq: int) -> bool:
        """True when (device, seq) was seen before; remembers it otherwise."""
        if seq in self.seen:
            return True
        self.seen.add(seq)
        return False

    def admit(self, seq: int, t: float) -> int:
        """Take in a fix's or an event's (seq, device time): ``SEQ_NEW``, ``SEQ_DUPLICATE`` or
        ``SEQ_RESTART``; only a duplicate is not remembered.

        A device that reboots may count again from 1.  Those seqs were seen before (or lie
        below the device's highest), so they used to be dropped as duplicates, without a
        trace, until the device passed its old maximum: no alert from it for that long.  A
        duplicate repeats its (seq, t), and a fix that is merely late is older than the
        fixes numbered after it; so a seen or lower seq whose time is more than
        ``RESTART_MIN_ADVANCE_S`` after every time this device sent is neither: its numbering
        restarted.  The old numbers are then forgotten (``_new_epoch``) and it is taken in.
        Without a time seen yet (a fresh or old stored track) nothing is called a restart.
        """
        seen = seq in self.seen
        if self._restarted(seq, t, seen):
            self._new_epoch(seq)
            outcome = SEQ_RESTART
        elif seen:
            return SEQ_DUPLICATE
        else:
            outcome = SEQ_NEW
        self.seen.add(seq)
        if t > self.newest_seen_t:
            self.newest_seen_t = t
        return outcome

    def _restarted(self, seq: int, t: float, seen: bool) -> bool:
        newest = self.newest_seen_t
        if newest == -math.inf or not t > newest + RESTART_MIN_ADVANCE_S:
            return False  # nearly every fix of a counting device stops at the next test
        if seen:
            return True
        last = self.last_seq
        if last is not None and seq < last:
            return True
        for f in self.pending:
            if seq < f.seq:
                return True
        return False

    def _new_epoch(self, seq: int) -> None:
        """Forget the old numbering: ``seq`` continues a sequence that starts afresh.

        Fixes of the old numbering still waiting are released at the next ``release_due``
        (nothing will fill their gaps now), and ``seq`` itself is in sequence.
        """
        self.seen = SeqMemory(self.seen.limit)
        self.last_seq = seq - 1
        self.released_seq = seq - 1
        self.unnumbered = 0
        if self.pending:
            self.first_pending_arrival = -math.inf

    def add_pending(self, fix: Fix, now: float) -> None:
        """Queue a fix for ordered evaluation."""
        if not self.pending:
            self.first_pending_arrival = now
        self.pending.append(fix)
        self.last_pending_arrival = now
        self.last_arrival = max(self.last_arrival, now)

    def saw_seq(self, seq: int) -> None:
        """An event (processed at once) takes its place in the device's sequence."""
        if self.last_seq is None or seq > self.last_seq:
            self.last_seq = seq

    def in_sequence(self, rules: RuleConfig) -> bool:
        """The pending fixes are live and continue the sequence without a gap."""
        last = self.last_seq
        pending = self.pending
        if last is None or not pending:
            return False
        if len(pending) == 1:
            f = pending[0]
            return last < f.seq <= last + 1 + self.unnumbered and f.arrival - f.t <= rules.late_after_s
        seqs = sorted(f.seq for f in pending)
        missing = seqs[-1] - last - len(seqs)  # seqs are distinct: duplicates never get here
        return (
            seqs[0] > last
            and missing <= self.unnumbered
            and all(f.arrival - f.t <= rules.late_after_s for f in pending)
        )

    def due(self, now: float, rules: RuleConfig) -> bool:
        """Released when in sequence, or once the device is quiet or the oldest entry waited long
        enough: ``reorder_quiet_s`` / ``reorder_max_hold_s``, or for a late upload with a seq
        still missing ``late_quiet_s`` / ``late_max_hold_s``."""
        if not self.pending:
            return False
        if self.in_sequence(rules):
            return True
        quiet = now - self.last_pending_arrival
        held = now - self.first_pending_arrival
        if self.waits_for_late(rules):
            return quiet >= rules.late_quiet_s or held >= rules.late_max_hold_s
        return quiet >= rules.reorder_quiet_s or held >= rules.reorder_max_hold_s

    def waits_for_late(self, rules: RuleConfig) -> bool:
        """The pending fixes are a late upload still missing a part (``holds_late`` and not
        ``gap_closed``)."""
        return self.holds_late(rules) and not self.gap_closed()

    def holds_late(self, rules: RuleConfig) -> bool:
        """The pending fixes are (part of) a late upload: one arrived more than ``late_after_s``
        after its device time, or the oldest follows the device's newest evaluated fix by more
        than that with at least two seqs missing between it and the last fix released (a live
        fix sent on reconnect, ahead of the buffered stretch that is still on its way)."""
        limit = rules.late_after_s
        pending = self.pending
        oldest_t = math.inf
        lowest = -1
        for f in pending:
            if f.arrival - f.t > limit:
                return True
            if f.t < oldest_t:
                oldest_t = f.t
            if lowest < 0 or f.seq < lowest:
                lowest = f.seq
        released = self.released_seq  # not ``last_seq``: an event may have moved that past them
        if released is None or not pending or not math.isfinite(self.newest_t):
            return False
        return oldest_t - self.newest_t > limit and lowest - released - 1 >= 2 + self.unnumbered

    def gap_closed(self) -> bool:
        """Every seq from the one after the last fix released (or the lowest waiting, before
        any release) up to the highest waiting or processed (an event's seq counts: fixes
        numbered before it are on their way) has been taken in, or is excused by a rejected
        message without a readable seq: nothing of this stretch is still on its way."""
        pending = self.pending
        if not pending:
            return True
        lo = hi = pending[0].seq
        for f in pending:
            if f.seq > hi:
                hi = f.seq
            elif f.seq < lo:
                lo = f.seq
        last = self.last_seq
        if last is not None and last > hi:
            hi = last
        released = self.released_seq
        start = lo if released is None or released + 1 > lo else released + 1
        seen = self.seen
        if hi - start >= seen.limit:
            return False  # more than the memory holds: wait the quiet period instead
        missing = 0
        for seq in range(start, hi + 1):
            if seq not in seen:
                missing += 1
                if missing > self.unnumbered:
                    return False
        return True

    def release(self) -> list[Fix]:
        """Pending fixes in device-time order (ties broken by seq for determinism)."""
        # a copy, and the track keeps its own list: a new list per release outlived the fix
        # in every device's track (the cyclic collector walks what lives on: engine.runtime.heap)
        out = self.pending.copy()
        if len(out) > 1:
            out.sort(key=_time_and_seq)
        self.pending.clear()
        self.unnumbered = 0  # the gap they may have caused is closed or given up now
        for f in out:
            self.saw_seq(f.seq)
            if f.arrival > self.released_arrival:
                self.released_arrival = f.arrival
            if self.released_seq is None or f.seq > self.released_seq:
                self.released_seq = f.seq
        return out

    def accept(self, point: TrackPoint, rules: RuleConfig) -> bool:
        """Add a point to the track unless it is an implausible jump; True when accepted.

        A jump is an implied speed above ``max_speed_mps`` after allowing for both
        accuracy radii.  Several consecutive "jumps" that agree with each other
        mean the device really moved (or the track before was wrong): accept them.
        """
        if point.acc > rules.max_decision_acc_m:
            return False
        prev = self._previous(point.t)
        if prev is not None and not _plausible(prev, point, rules.max_speed_mps):
            if self.suspect and _plausible(self.suspect[-1], point, rules.max_speed_mps):
                self.suspect.append(point)
            else:
                self.suspect = [point]
            if len(self.suspect) < rules.jump_accept_after:
                return False
            for p in self.suspect[:-1]:
                self._insert(p)
            self.suspect = []
        elif self.suspect:  # not a new empty list for every fix (see ``release``)
            self.suspect = []
        self._insert(point)
        return True

    def _previous(self, t: float) -> TrackPoint | None:
        # the last point at or before t; ``points`` is in ascending time (``_insert``), so
        # the first such point from the end
        for p in reversed(self.points):
            if p.t <= t:
                return p
        return None

    def _insert(self, point: TrackPoint) -> None:
        pts = self.points
        if not pts or point.t >= pts[-1].t:
            pts.append(point)
            if len(pts) > TRACK_POINTS:
                del pts[0]
        else:
            items = sorted([*pts, point], key=lambda p: p.t)
            pts[:] = items[-TRACK_POINTS:]
        self.newest_t = max(self.newest_t, point.t)
        while pts and pts[0].t < self.newest_t - TRACK_SPAN_S and len(pts) > 2:
            del pts[0]

    def position_at(self, t: float, max_extrap_s: float) -> tuple[float, float, float, float]:
        """``(x, y, extra_uncertainty_m, extrapolated_s)`` at device time ``t`` (interpolated, or
        extrapolated for at most ``max_extrap_s``; ``geo.proximity.predict_position``).

        The track must have points; they are in ascending time (``_insert``), so the prediction
        is given the two it reads, not arrays of the whole track: the samples
        ``geo.proximity.predict_on_samples`` picks, here on typed track points (its generic
        attribute reads cost more than the answer in the compiled build).
        """
        if not max_extrap_s >= 0.0:  # "not >=" also refuses NaN, as predict_position does
            raise GeoError("predict_position: max_extrapolation_s must be >= 0")
        pts = self.points
        n = len(pts)
        last = pts[-1]
        if t >= last.t:
            a = pts[-2] if n >= 2 else last
            return predict_from_two(
                PREDICT_AFTER, n >= 2, t, a.t, a.x, a.y, last.t, last.x, last.y, max_extrap_s,
                DEFAULT_MIN_SPEED_MPS,
            )
        first = pts[0]
        if t <= first.t:
            b = pts[1] if n >= 2 else first
            return predict_from_two(
                PREDICT_BEFORE, n >= 2, t, first.t, first.x, first.y, b.t, b.x, b.y,
                max_extrap_s, DEFAULT_MIN_SPEED_MPS,
            )
        hi = bisect_right(pts, t, key=_time_of)  # the first point after t: 0 < hi < n
        a, b = pts[hi - 1], pts[hi]
        return predict_from_two(
            PREDICT_BETWEEN, True, t, a.t, a.x, a.y, b.t, b.x, b.y, max_extrap_s,
            DEFAULT_MIN_SPEED_MPS,
        )

    def travel_bound(self, t0: float, t1: float, max_extrap_s: float) -> float:
        """At least as far as ``position_at`` moves between device times ``t0 <= t1``.

        ``position_at`` is piecewise linear in time: between points it runs along the
        segment joining them, beyond the track it moves at the velocity of the nearest
        segment for at most ``max_extrap_s``, then stands.  Where points share a time it
        jumps between them, and a jump at ``t0`` or ``t1`` itself counts too
        (``closest_approach`` samples both ends).  So its path over the interval is no longer
        than the track segments it runs along, those jumps included, plus that extrapolated
        motion.  The track must have points.
        """
        pts = self.points
        n = len(pts)
        if n < 2:
            return 0.0  # a one-point track stands still (predict_from_two: no velocity)
        total = 0.0
        first, last = pts[0], pts[-1]
        if t1 > last.t:  # dead reckoning after the last point
            a = pts[-2]
            span = last.t - a.t
            if span > 0.0:
                dx, dy = last.x - a.x, last.y - a.y
                speed = math.sqrt(dx * dx + dy * dy) / span
                lo = min(max(t0 - last.t, 0.0), max_extrap_s)
                total += speed * (min(t1 - last.t, max_extrap_s) - lo)
        if t0 < first.t:  # ... and back from the first one
            b = pts[1]
            span = b.t - first.t
            if span > 0.0:
                dx, dy = b.x - first.x, b.y - first.y
                speed = math.sqrt(dx * dx + dy * dy) / span
                hi = min(max(first.t - t1, 0.0), max_extrap_s)
                total += speed * (min(first.t - t0, max_extrap_s) - hi)
        # the segments between consecutive points over [t0, t1], from the point position_at
        # stands on at t0 (the first one when t0 is at or before the track's first time:
        # position_at gives that point there, and the next instant the last of its time)
        # up to t1, jumps between points of t1's own time included.  That point is the last
        # one at or before t0 (``bisect_right - 1``), found from the newest end: t0 is the
        # mover's previous fix, at most a few points back.
        j = 0
        if t0 > first.t:
            j = n - 1
            while pts[j].t > t0:
                j -= 1
        prev = pts[j]
        for k in range(j + 1, n):
            p = pts[k]
            if prev.t > t1 or (prev.t == t1 and p.t > t1):
                break
            dx, dy = p.x - prev.x, p.y - prev.y
            total += math.sqrt(dx * dx + dy * dy)
            prev = p
        return total

    def nearest(self, t: float) -> TrackPoint:
        """The point nearest to device time ``t``, the oldest of equally near ones: the answer
        of ``min(points, key=lambda p: abs(p.t - t))`` without visiting every point.

        The track must have points.  In ascending time the distance falls up to ``t`` and
        rises after it (rounding keeps that order), so the answer is the first point after
        ``t`` when it is strictly nearer, else the oldest point as near as the last one at or
        before ``t``.
        """
        pts = self.points
        last = pts[-1]
        if t >= last.t and (len(pts) == 1 or pts[-2].t != last.t):
            return last  # the usual question: at or after the newest point, no tie with it
        hi = bisect_right(pts, t, key=_time_of)  # the first point after t
        if hi == 0:
            return pts[0]
        lo = hi - 1
        d = abs(pts[lo].t - t)
        if hi < len(pts) and abs(pts[hi].t - t) < d:
            return pts[hi]
        while lo > 0 and abs(pts[lo - 1].t - t) == d:
            lo -= 1
        return pts[lo]

    def latest(self) -> TrackPoint | None:
        """Newest accepted point in device time."""
        return self.points[-1] if self.points else None

    def velocity(
        self, at_t: float, window_s: float = 120.0, max_acc_m: float = 100.0
    ) -> tuple[float, float]:
        """Velocity (m/s, projected axes) from the accurate points in the window ending at ``at_t``.

        Wi-Fi and cell positions (hundreds of metres) would turn a man sitting at home into
        one driving at 20 m/s, so only points with accuracy within ``max_acc_m`` count.
        """
        # the first and last accurate point in the window; ``points`` is in ascending time
        # (``_insert``), so walk back from the end and stop before the window
        a = b = None
        start = at_t - window_s
        for p in reversed(self.points):
            if p.t > at_t:
                continue
            if p.t < start:
                break
            if p.acc <= max_acc_m:
                if b is None:
                    b = p
                else:
                    a = p
        if a is None or b is None:
            return (0.0, 0.0)
        dt = b.t - a.t
        if dt <= 0:
            return (0.0, 0.0)
        return ((b.x - a.x) / dt, (b.y - a.y) / dt)


_time_of = attrgetter("t")
_time_and_seq = attrgetter("t", "seq")


def _plausible(a: TrackPoint, b: TrackPoint, max_speed: float) -> bool:
    dist = hypot(b.x - a.x, b.y - a.y)
    slack = a.acc + b.acc
    dt = abs(b.t - a.t)
    return dist - slack <= max_speed * max(dt, 1.0)
