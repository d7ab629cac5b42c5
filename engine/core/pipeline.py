"""The pure engine: messages and time in, alert changes and outgoing messages out.

No I/O, no clock reads, no ``await`` (the h11 pattern): the asyncio service,
``emguard replay`` and the tests drive the same ``Engine`` and get the same
decisions for the same inputs.  Processing time (``now``) is passed in; rules
decide in device time.

Flow for a fix: decode → validate → dedup → per-device reorder buffer →
(released in device-time order) project → jump filter → device health →
zones of the subject's valid orders → proximity against each partner →
alert lifecycle → notifications.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from heapq import heappop, heappush
from operator import attrgetter

from devices.decode import Decoded, dead_letter_record, decode_message
from devices.model import DeviceEvent, Fix, Rejection
from engine.core.alerts import AlertBook
from engine.core.case_state import closed_alert_part, forget_orders, merge_part, part_of
from engine.core.cases import Cases, cases_of, regrouped
from engine.core.config import EngineConfig
from engine.core.effects import Effects, EngineStats, StateDelta
from engine.core.indexes import DueIndex, SilenceIndex, VictimFloor, due_key
from engine.core.messages import deadletter
from engine.core.notify import Notifier, check_prompt
from engine.core.orders import Order, OrderBook
from engine.core.prepared import PreparedBatch
from engine.core.rules.context import RuleContext
from engine.core.rules.crossings import ApprovedCrossings, previous_point, report_reception_gap
from engine.core.rules.device_events import DeviceRules
from engine.core.rules.expiry import ExpiryWatch
from engine.core.rules.proximity import ProximityRules
from engine.core.rules.zones import ZoneRules, zone_key
from engine.core.state_codec import RecordCache
from engine.core.tracks import SEQ_DUPLICATE, SEQ_RESTART, DeviceTrack, TrackPoint
from geo.index import ZoneIndex
from geo.projection import Projector


class Engine:
    """Owns the in-memory engine state and applies the rules in device time."""

    def __init__(
        self,
        book: OrderBook,
        config: EngineConfig | None = None,
        *,
        silent_after_s: dict[str, float] | None = None,
        default_silent_after_s: float = 180.0,
    ) -> None:
        self.config = config or EngineConfig()
        self.projector = Projector(self.config.crs)
        self.index = ZoneIndex(self.projector)
        self.alerts = AlertBook(
            deadlines=self.config.deadlines, kind_deadlines=self.config.kind_deadlines,
            policy=self.config.alert_policy,
        )
        self.tracks: dict[str, DeviceTrack] = {}
        self.zones = ZoneRules(self.index)
        self.proximity = ProximityRules()
        self.crossings = ApprovedCrossings(self.index)
        self.device_rules = DeviceRules()
        self.notifier = Notifier(self.config.prefix, self.config.rules)
        self.stats = EngineStats()
        self.silent_after_s = dict(silent_after_s or {})
        self.default_silent_after_s = default_silent_after_s
        self.silent: set[str] = set()
        # evidence hook (engine.evidence.recorder.make_fix_sink): every evaluated fix and
        # whether the jump filter accepted it, before any alert change it causes
        self.evidence_sink: Callable[[Fix, bool], None] | None = None
        # incremental persistence (engine.core.case_state): cases changed since the last state_delta
        self.cases: Cases | None = None
        self._dirty: set[str] = set()
        self._whole_state = True  # the next delta replaces everything stored
        self._alert_ids: dict[str, set[str]] = {}  # case -> ids of its open alerts
        self._alerts_changed: set[str] = set()  # closed ones get a part of their own
        self.record_cache = RecordCache()  # conversions the next parts reuse (state_codec)
        self.expiry = ExpiryWatch()
        # tick() and release_due() without a pass over every track (engine.core.indexes)
        self._silence_index: SilenceIndex | None = None
        self._victim_floor: VictimFloor | None = None
        self._due_index: DueIndex | None = None
        # decoded messages and projected fixes of the last ``prepare`` (payload / fix id -> ...)
        self._ahead = PreparedBatch()  # decodings and projections of the last ``prepare``
        self.book = book
        self.set_orders(book)

    # --- orders --------------------------------------------------------------------------
    def set_orders(self, book: OrderBook) -> None:
        """Install a new order book; the zone index is patched, not rebuilt, and no alert is dropped."""
        wanted = {
            zone_key(o.id, z.zone_id): z.shape for o in book.orders.values() for z in o.zones
        }
        old = {
            zone_key(o.id, z.zone_id): z.shape for o in self.book.orders.values() for z in o.zones
        } if self.book is not book else {}
        for key in old.keys() - wanted.keys():
            if key in self.index:
                self.index.remove(key)
        for key, shape in wanted.items():
            if key not in self.index or old.get(key) != shape:
                self.index.upsert(key, shape)
        self.book = book
        self._ahead.forget_decoded()  # decoded with the old book's OwnTracks map
        self.zones.forget_measurements()  # zones may have changed shape under the same key
        self.proximity.forget_pairs()
        cases = cases_of(book)
        before = self.cases
        self.cases = cases
        if before is None:
            self._whole_state = True
        else:
            forget_orders(self, before.of_order.keys() - cases.of_order.keys())
            # every case that lost or gained a member is stored again (or dropped when empty)
            self._dirty |= regrouped(before, cases)
        self._index_alerts()

    # --- input ---------------------------------------------------------------------------
    def prepare(self, messages: Iterable[tuple[str, bytes, float]]) -> None:
        """Decode a micro-batch of messages ahead and project its fixes in one call.

        Only a hint (``engine.core.prepared.PreparedBatch``): ``handle`` takes each message's
        decoding and its fixes' positions from there, and decodes and projects anything else
        itself.  What a ``prepare`` holds is forgotten at the next one, or when the orders change.
        """
        self._ahead.fill(messages, self._decode, self.projector)

    def _decode(self, topic: str, payload: bytes, now: float) -> Decoded:
        return decode_message(
            topic,
            payload,
            now,
            prefix=self.config.prefix,
            owntracks_map=self.book.owntracks,
            max_future_s=self.config.max_future_s,
        )

    def handle(self, topic: str, payload: bytes, now: float) -> Effects:
        """One MQTT message at processing time ``now``."""
        ahead = self._ahead.take_decoded(topic, payload, now)
        decoded = ahead if ahead is not None else self._decode(topic, payload, now)
        self.stats.received += 1
        if not decoded.rejections and not decoded.events:
            # nearly every message: one or more fixes and nothing else to report
            for fix in decoded.fixes:
                self._accept_fix(fix, now)
            return self.release_due(now)
        effects = Effects()
        for rejection in decoded.rejections:
            self.stats.rejected[rejection.reason.value] += 1
            effects.messages.append(deadletter(self.config.prefix, dead_letter_record(rejection)))
            self._rejected_seq(rejection)
        for fix in decoded.fixes:
            self._accept_fix(fix, now)
        if decoded.events:
            ctx = self._ctx(now)
            for event in sorted(decoded.events, key=lambda e: (e.t, e.seq)):
                self._event(ctx, event)
            effects.extend(self._finish(ctx))
        effects.extend(self.release_due(now))
        return effects

    def _accept_fix(self, fix: Fix, now: float) -> None:
        track = self._track(fix.device)
        self.stats.fixes += 1
        admitted = track.admit(fix.seq, fix.t)
        if admitted == SEQ_DUPLICATE:
            self.stats.duplicates += 1
            return
        if admitted == SEQ_RESTART:
            self.stats.seq_restarts += 1
        self._touch(fix.device)
        self.stats.lag_s.append(max(0.0, now - fix.t))
        track.add_pending(fix, now)
        self._schedule(track)

    def _rejected_seq(self, rejection: Rejection) -> None:
        """A rejected message of a known device still used its seq: nothing will fill that gap.

        When its seq cannot be read (truncated JSON, another device's id in the payload), it
        still came on the device's own topic (the broker's ACL admits only that device), so
        it stands for one missing seq: the next fix after it is not held for that gap.
        """
        if rejection.device is None:
            return
        track = self.tracks.get(rejection.device)
        if track is None:
            return
        self._touch(rejection.device)
        if rejection.seq is not None:
            self._saw_seq(track, rejection.seq)
        else:
            track.unnumbered += 1
            if track.pending:
                self._schedule(track)

    def _saw_seq(self, track: DeviceTrack, seq: int) -> None:
        """A message other than a fix took its place in the sequence; it may close the gap the
        pending fixes wait on."""
        track.saw_seq(seq)
        if track.pending:
            self._schedule(track)

    def _schedule(self, track: DeviceTrack) -> None:
        # a heap of reorder-buffer due times, so release_due need not scan every track per
        # message; an index of a replaced ``tracks`` dict (restore) is rebuilt by release_due
        index = self._due_index
        if index is not None and index.valid_for(self.tracks, self.config.rules):
            index.add(track)

    def _event(self, ctx: RuleContext, event: DeviceEvent) -> None:
        track = self._track(event.device)
        self.stats.events += 1
        admitted = track.admit(event.seq, event.t)
        if admitted == SEQ_DUPLICATE:
            self.stats.duplicates += 1
            return
        if admitted == SEQ_RESTART:
            self.stats.seq_restarts += 1
        self._touch(event.device)
        track.last_arrival = max(track.last_arrival, ctx.now)
        self._saw_seq(track, event.seq)
        self._heard(ctx, event.device)
        late = ctx.now - event.t > ctx.rules.late_after_s
        self.device_rules.on_event(ctx, event, late)

    # --- time ----------------------------------------------------------------------------
    def release_due(self, now: float, *, force: bool = False) -> Effects:
        """Evaluate every device whose reorder buffer is due (all of them with ``force``)."""
        rules = self.config.rules
        index = self._due_index
        if index is None or not index.valid_for(self.tracks, rules):
            index = self._due_index = DueIndex(self.tracks, rules)
        heap = index.heap
        if force:
            due = [t for t in self.tracks.values() if t.pending]
            heap.clear()
        else:
            # exactly the tracks whose ``due`` holds: every pending track's newest heap key is
            # at most its true due time, and each popped candidate is checked with ``due``
            found: dict[str, DeviceTrack] = {}
            retry = []
            while heap and heap[0][0] <= now:
                key, device = heappop(heap)
                track = self.tracks.get(device)
                if track is None or not track.pending or device in found:
                    continue
                if track.due(now, rules):
                    found[device] = track
                elif key == due_key(track, rules):
                    retry.append((key, device))  # its newest key, within rounding: keep it
            for entry in retry:
                heappush(heap, entry)
            due = list(found.values())
        if not due:
            return Effects()  # what _finish gives for a context nothing was added to
        ctx = self._ctx(now)
        if len(due) > 1:
            due.sort(key=_device_of)
        for track in due:
            self._touch(track.device)
            released_before = track.released_arrival
            fixes = track.release()
            self._evaluate_fixes(ctx, track, fixes, released_before)
        return self._finish(ctx)

    def tick(self, now: float) -> Effects:
        """Periodic work at processing time: reorder release, silence, deadlines, order expiry."""
        effects = self.release_due(now)
        ctx = self._ctx(now)
        for track in self._newly_silent(now):
            silent_for = now - track.last_arrival
            self.silent.add(track.device)
            self._touch(track.device)
            self.device_rules.on_silence(ctx, track.device, silent_for, track.newest_t if track.points else now)
        self.expiry.check(ctx)
        ctx.changes.extend(self.alerts.escalate_overdue(now))
        self.forget_old_victim_positions(now)
        effects.extend(self._finish(ctx))
        return effects

    # --- durability ----------------------------------------------------------------------
    def state_delta(self) -> StateDelta:
        """The state of every case changed since the last delta, as stored parts (engine.core.case_state).

        Taking a delta forgets those changes: hand it back with ``state_not_stored`` if the
        store did not take it.  After an order change, the cases that gained or lost a member
        are in the next delta (an emptied case as None); a fresh engine's first delta replaces
        everything stored.
        """
        assert self.cases is not None
        whole = self._whole_state
        cases = self._all_cases() if whole else self._dirty
        parts = {c: part_of(self, self.cases, c, self._alert_ids.get(c, ())) for c in sorted(cases)}
        # an alert that was closed is stored once on its own; one that is open (again) is
        # stored with its case, so its own part, if any, goes
        changed = self.alerts.alerts if whole else self._alerts_changed
        for alert_id in sorted(changed):
            part = closed_alert_part(self, alert_id)
            if part is not None or not whole:
                parts[f"A:{alert_id}"] = part
        self._dirty = set()
        self._alerts_changed = set()
        self._whole_state = False
        return StateDelta(parts, whole)

    @property
    def state_changed(self) -> bool:
        """True when some case changed since the last ``state_delta`` (time alone can do that)."""
        return bool(self._dirty or self._alerts_changed or self._whole_state)

    def state_not_stored(self, delta: StateDelta) -> None:
        """The store refused ``delta``: its cases go into the next one again."""
        for key in delta.parts:
            if key.startswith("A:"):
                self._alerts_changed.add(key[2:])
            else:
                self._dirty.add(key)
        self._whole_state = self._whole_state or delta.replace_all

    def restore_parts(self, parts: Iterable[bytes]) -> list[str]:
        """Continue from stored parts (after a restart or failover); the engine must be fresh.

        A part that cannot be read (a part from before the state schema, a schema version
        this engine does not know, torn bytes) is left out whole and described in the list
        returned: one unreadable case must not keep the engine from monitoring every other
        one.  Its case starts afresh; the part stays in the store until its case is next
        committed (docs/state-schema.md).
        """
        unreadable: list[str] = []
        for i, blob in enumerate(parts):
            try:
                merge_part(self, blob)
            except Exception as exc:  # stored state is input too: never fatal for the others
                unreadable.append(f"part {i} ({len(blob)} bytes): {type(exc).__name__}: {str(exc)[:200]}")
        self.drop_indexes()
        self._index_alerts()
        self._dirty = set()
        self._alerts_changed = set()
        self._whole_state = False
        return unreadable

    def _touch(self, device: str) -> None:
        assert self.cases is not None
        self._dirty.add(self.cases.device_case(device))

    def _index_alerts(self) -> None:
        assert self.cases is not None
        self._alert_ids = {}
        for alert in self.alerts.alerts.values():
            if alert.is_open:
                self._alert_ids.setdefault(self.cases.alert_case(alert), set()).add(alert.alert_id)

    def _all_cases(self) -> set[str]:
        assert self.cases is not None
        found = set(self._alert_ids) | set(self.cases.orders) | self._dirty
        found.update(self.cases.device_case(d) for d in self.tracks)
        return found

    def drop_indexes(self) -> None:
        """Forget the indexes ``tick`` and ``release_due`` keep over the state (reorder due
        times, silence times, the victims' oldest point, orders to check for expiry, the
        earliest open deadline); each is rebuilt from the state when next needed.

        They follow the engine's own changes, and notice a replaced dict; anything that
        changes tracks, ``silent``, alerts or limits in place by other means (``restore_parts``)
        must call this afterwards.
        """
        self._due_index = None
        self._silence_index = None
        self._victim_floor = None
        self.expiry = ExpiryWatch()
        self.alerts.drop_indexes()

    def forget_old_victim_positions(self, now: float) -> int:
        """Drop protected persons' track points older than the retention (privacy); count dropped.

        Runs every tick, so the pass over all tracks is skipped while a lower bound of the
        protected persons' oldest point (kept up to date by ``_evaluate_fixes``, the only
        place points are added; rebuilt here and after a new ``tracks`` or order book) is
        within the retention: nothing would be dropped then.
        """
        horizon = now - self.config.rules.victim_retention_s
        floor = self._victim_floor
        if floor is not None and floor.valid_for(self.tracks, self.book) and floor.oldest >= horizon:
            return 0
        dropped = 0
        oldest = math.inf
        for device, track in self.tracks.items():
            owner = self.book.owner_of(device)
            if owner is None or owner[0] != "protected":
                continue
            while track.points and track.points[0].t < horizon:
                del track.points[0]
                dropped += 1
                self._touch(device)
            if track.points and track.points[0].t < oldest:
                oldest = track.points[0].t
        self._victim_floor = VictimFloor(self.tracks, self.book, oldest)
        return dropped

    def flush(self, now: float) -> Effects:
        """Evaluate everything still buffered (end of a replay, graceful shutdown)."""
        return self.release_due(now, force=True)

    def act(
        self, alert_id: str, action: str, by: str, note: str, now: float, *,
        outcome: str = "", target: str = "", supervisor: bool = False,
    ) -> Effects:
        """An operator action (``AlertBook.act``: claim, ack, escalate, note, close, prompt);
        raises AlertActionError when it does not apply (a prompt: also when the subject has no
        ankle monitor).  ``supervisor``: the actor may take over an alert someone else claimed
        (only the HTTP API knows roles; ``em/ack`` does not)."""
        if action == "prompt":
            check_prompt(self.book, self.alerts.alerts.get(alert_id))
        ctx = self._ctx(now)
        ctx.changes.append(self.alerts.act(
            alert_id, action, by, note, now, outcome=outcome, target=target, supervisor=supervisor,
        ))
        return self._finish(ctx)

    # --- evaluation ----------------------------------------------------------------------
    def _evaluate_fixes(
        self, ctx: RuleContext, track: DeviceTrack, fixes: list[Fix], released_before: float
    ) -> None:
        # one point at a time: pyproj's scalar path is ~10x cheaper than a 1-element array
        # (a release holds one or two fixes) and gives the same numbers (the same PROJ call)
        ahead = self._ahead
        device = track.device
        if fixes and ctx.now - fixes[0].t > ctx.rules.late_after_s:  # the oldest is first

            def silence_note(detail: str, since: float) -> bool:
                # a reception gap is told on the device's silence alert (one outage, one
                # alert): in the note that clears it, or after it when an event arriving ahead
                # of the buffered fixes cleared it
                if device in self.silent:
                    return self._heard(ctx, device, detail)
                return self.device_rules.note_gap(ctx, device, detail, since)

            report_reception_gap(ctx, device, fixes, track.newest_t, released_before, silence_note)
        self._heard(ctx, device)
        for fix in fixes:
            position = ahead.take_position(fix)
            if position is not None:
                x, y = position
            else:
                x, y = self.projector.forward(float(fix.lon), float(fix.lat))
            late = ctx.now - fix.t > ctx.rules.late_after_s or fix.t < track.newest_t
            if late:
                self.stats.late += 1
            ctx.arrival = fix.arrival
            key = fix.key
            self.device_rules.on_fix(ctx, fix, key, late)
            point = TrackPoint(fix.t, x, y, fix.acc, key, fix.src)
            accepted = track.accept(point, ctx.rules)
            if self.evidence_sink is not None:
                self.evidence_sink(fix, accepted)
            if not accepted:
                self.stats.jumps += 1
                continue
            floor = self._victim_floor
            if floor is not None and track.points[0].t < floor.oldest:
                owner = self.book.owner_of(track.device)
                if owner is not None and owner[0] == "protected":
                    floor.oldest = track.points[0].t
            self.stats.evaluated += 1
            self._evaluate_point(ctx, track, fix, point, late)

    def _evaluate_point(
        self, ctx: RuleContext, track: DeviceTrack, fix: Fix, point: TrackPoint, late: bool
    ) -> None:
        owner = self.book.owner_of(fix.device)
        if owner is None:
            return
        role, person = owner
        # sparse fixes: the straight path from the previous accepted fix is checked too
        prev = previous_point(track, point) if ctx.rules.sparse_crossing_enabled else None
        # approved corridors / time windows cap the order's alerts at info (engine.core.rules.crossings)
        self.crossings.sync(self.book)
        if role == "subject":
            orders = [o for o in self.book.orders_of_subject(person) if o.valid_at(fix.t)]
            self.crossings.update(ctx, person, orders, point)
            caps = self.crossings.caps(ctx, orders, fix.t)
            if caps:
                with self.crossings.capped(ctx, caps):
                    self._subject_rules(ctx, person, track, fix, orders, prev, point, late)
            else:  # nearly every fix: no context to enter
                self._subject_rules(ctx, person, track, fix, orders, prev, point, late)
        else:
            for order in self.book.orders_protecting(person):
                if not order.valid_at(fix.t):
                    continue
                subject_track = self._freshest(self.book.subject_devices(order.subject))
                if subject_track is None:
                    continue
                caps = self.crossings.caps(ctx, [order], fix.t)
                if caps:
                    with self.crossings.capped(ctx, caps):
                        self._victim_rules(ctx, person, order, subject_track, track, fix, prev, point, late)
                else:
                    self._victim_rules(ctx, person, order, subject_track, track, fix, prev, point, late)

    def _subject_rules(
        self, ctx: RuleContext, person: str, track: DeviceTrack, fix: Fix, orders: list[Order],
        prev: TrackPoint | None, point: TrackPoint, late: bool,
    ) -> None:
        """Zones and proximity for a subject's accepted fix (under the orders' caps, if any)."""
        self.zones.evaluate(ctx, person, fix.device, orders, fix, point, late)
        if prev is not None:
            self.zones.evaluate_segment(ctx, person, fix.device, orders, fix, prev, point, late)
        for order in orders:
            for pair in self.proximity.pairs(order):
                victim = self._freshest(self.book.protected_devices(pair.rule.protected_person))
                if victim is not None:
                    self.proximity.evaluate(ctx, pair, track, victim, fix.t, late)
                    if prev is not None:
                        self.proximity.evaluate_segment(ctx, pair, track, victim, track, prev, point, late)

    def _victim_rules(
        self, ctx: RuleContext, person: str, order: Order, subject_track: DeviceTrack,
        track: DeviceTrack, fix: Fix, prev: TrackPoint | None, point: TrackPoint, late: bool,
    ) -> None:
        """Proximity of one order for a protected person's accepted fix."""
        for pair in self.proximity.pairs(order):
            if pair.rule.protected_person == person:
                self.proximity.evaluate(ctx, pair, subject_track, track, fix.t, late)
                if prev is not None:
                    self.proximity.evaluate_segment(
                        ctx, pair, subject_track, track, track, prev, point, late
                    )

    def _freshest(self, devices: tuple[str, ...]) -> DeviceTrack | None:
        best = None
        for d in devices:
            t = self.tracks.get(d)
            if t is not None and t.points and (best is None or t.newest_t > best.newest_t):
                best = t
        return best

    def _heard(self, ctx: RuleContext, device: str, note: str = "") -> bool:
        """The device sent something: its silence ends.  True when that cleared its silence
        alert (with ``note`` added to the clearing note)."""
        if device in self.silent:
            self.silent.discard(device)
            index = self._silence_index
            track = self.tracks.get(device)
            if index is not None and index.valid_for(self.tracks, self.silent, self.silent_after_s, self.default_silent_after_s) and track is not None:
                index.add(track)  # it can fall silent again
            return self.device_rules.on_heard(ctx, device, note)
        return False

    def _track(self, device: str) -> DeviceTrack:
        track = self.tracks.get(device)
        if track is None:
            track = self.tracks[device] = DeviceTrack(device)
            index = self._silence_index
            if index is not None and index.tracks is self.tracks:
                index.size += 1
                index.add(track)
        return track

    def _newly_silent(self, now: float) -> list[DeviceTrack]:
        """The tracks that fall silent at ``now``, in device order (see ``engine.core.indexes.SilenceIndex``)."""
        index = self._silence_index
        if index is None or not index.valid_for(self.tracks, self.silent, self.silent_after_s, self.default_silent_after_s):
            index = self._silence_index = SilenceIndex(
                self.tracks, self.silent, self.silent_after_s, self.default_silent_after_s
            )
        return index.due(now)

    def _ctx(self, now: float) -> RuleContext:
        return RuleContext(self.book, self.alerts, self.config.rules, self.config.prefix, now)

    def _finish(self, ctx: RuleContext) -> Effects:
        effects = Effects(changes=list(ctx.changes))
        assert self.cases is not None
        for change in ctx.changes:
            alert = change.alert
            case = self.cases.alert_case(alert)
            self._dirty.add(case)
            self._alerts_changed.add(alert.alert_id)
            if alert.is_open:
                self._alert_ids.setdefault(case, set()).add(alert.alert_id)
            else:
                self._alert_ids.get(case, set()).discard(alert.alert_id)
            effects.messages.extend(self.notifier.on_change(self.book, change, ctx.now))
        effects.messages.extend(ctx.messages)  # prompts and pursuit commands after the alerts
        return effects


_device_of = attrgetter("device")
