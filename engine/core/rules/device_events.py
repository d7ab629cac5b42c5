"""Device events and device health: tamper, battery, power and GNSS loss, panic, Bluetooth contact.

Tamper and panic alerts are never cleared by the engine: an operator closes
them.  Battery and signal alerts end when the device recovers.  A panic from a
victim device is critical at once for every order protecting her.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from devices.model import DeviceEvent, Fix
from engine.core.alert_records import Alert, Level
from engine.core.orders import Order, OrderBook
from engine.core.rules.context import RuleContext


@dataclass(slots=True, init=False)
class BatteryTrend:
    """Recent (device time, percent) samples to estimate when a battery dies (a written
    ``__init__``: engine.tools.native)."""

    samples: deque[tuple[float, float]]
    charging: bool

    def __init__(self, samples: deque[tuple[float, float]] | None = None, charging: bool = False) -> None:
        self.samples = deque(maxlen=32) if samples is None else samples
        self.charging = charging

    def add(self, t: float, pct: float) -> None:
        if self.samples and t <= self.samples[-1][0]:
            return
        # as a float in both builds: the compiled one converts an int (a fix's ``batt``) on the
        # way in, so the pure one does too, and stored state reads the same in either
        self.samples.append((t, float(pct)))

    def dies_at(self) -> float | None:
        """Device time the battery reaches 0 % at the recent drain rate (least squares), or None."""
        if self.charging or len(self.samples) < 3:
            return None
        ts = [s[0] for s in self.samples]
        ps = [s[1] for s in self.samples]
        n = len(ts)
        mt, mp = sum(ts) / n, sum(ps) / n
        var = sum((t - mt) ** 2 for t in ts)
        if var <= 0:
            return None
        slope = sum((t - mt) * (p - mp) for t, p in zip(ts, ps, strict=True)) / var
        if slope >= 0:
            return None
        return ts[-1] + ps[-1] / -slope


class DeviceRules:
    """Turns device events and health fields of fixes into alerts."""

    def __init__(self) -> None:
        self.battery: dict[str, BatteryTrend] = {}
        self.non_gnss_since: dict[str, float] = {}  # device -> device time of first Wi-Fi/cell fix in a row
        # kind -> device -> the alert book's episode keys ``_may_be_open`` looks for, per order
        # book (the keys as plain objects: the compiled build would unpack a typed tuple of
        # tuples and box each key again for the look-up)
        self._keys_book: OrderBook | None = None
        self._episode_keys: dict[str, dict[str, tuple[object, ...]]] = {}

    # --- fixes -------------------------------------------------------------------------
    def on_fix(self, ctx: RuleContext, fix: Fix, key: str, late: bool) -> None:
        """Health fields that ride along on every fix: strap state and battery (``key``: the
        fix's ``key``, made once by the caller)."""
        owner = ctx.book.owner_of(fix.device)
        if owner is None:
            return
        role, person = owner
        if fix.strap in ("open", "cut") and role == "subject":
            self._tamper(ctx, person, fix.device, fix.t, f"strap_{fix.strap}", key, late)
        if fix.batt is not None:
            self._battery(ctx, role, person, fix.device, fix.t, fix.batt, key, late)
        self._position_source(ctx, role, person, fix, key, late)

    # --- events ------------------------------------------------------------------------
    def on_event(self, ctx: RuleContext, ev: DeviceEvent, late: bool) -> None:
        """One device event (contract §3)."""
        owner = ctx.book.owner_of(ev.device)
        if owner is None:
            return
        role, person = owner
        kind = ev.type
        if kind in ("strap_open", "strap_cut", "case_open") and role == "subject":
            self._tamper(ctx, person, ev.device, ev.t, kind, ev.key, late)
        elif kind == "panic" and role == "protected":
            self._panic(ctx, person, ev, late)
        elif kind == "low_battery":
            pct = ev.detail.get("batt", ctx.rules.battery_low_pct)
            pct = float(pct) if isinstance(pct, int | float) else float(ctx.rules.battery_low_pct)
            self._battery(ctx, role, person, ev.device, ev.t, pct, ev.key, late, forced=True)
        elif kind == "charger_connected":
            self.battery.setdefault(ev.device, BatteryTrend()).charging = True
            self._clear_for(ctx, role, person, "battery", ev.device, "charger connected", ev.t)
        elif kind == "charger_disconnected":
            self.battery.setdefault(ev.device, BatteryTrend()).charging = False
        elif kind == "power_off":
            self._signal(ctx, role, person, ev.device, ev.t, "alarm", "device powered off", ev.key, late)
        elif kind == "gnss_lost":
            self._signal(ctx, role, person, ev.device, ev.t, "warning", "GNSS lost: positions from Wi-Fi/cell only", ev.key, late)
        elif kind == "gnss_restored":
            self._clear_for(ctx, role, person, "signal_loss", ev.device, "GNSS restored", ev.t)
        elif kind == "ble_seen" and role == "protected":
            self._ble(ctx, person, ev, late)

    # --- time --------------------------------------------------------------------------
    def on_silence(
        self, ctx: RuleContext, device: str, silent_for_s: float, last_seen_t: float
    ) -> None:
        """A device sent nothing for longer than its configured interval allows."""
        owner = ctx.book.owner_of(device)
        if owner is None:
            return
        role, person = owner
        level: Level = "alarm" if role == "subject" else "warning"
        self._signal(
            ctx, role, person, device, last_seen_t, level,
            f"no message for {silent_for_s / 60:.0f} min", None, False,
        )

    def on_heard(self, ctx: RuleContext, device: str, note: str = "") -> bool:
        """A message from a device ends its silence; True when that cleared its silence alert
        (``note``, e.g. the reception gap its buffered fixes cover, is added to the clearing note)."""
        owner = ctx.book.owner_of(device)
        if owner is not None:
            alert = self._open(ctx, owner[0], owner[1], "signal_loss", device)
            if alert is not None and alert.detail.startswith("no message"):
                text = f"device reporting again; {note}" if note else "device reporting again"
                self._clear_for(ctx, owner[0], owner[1], "signal_loss", device, text)
                return True
        return False

    def note_gap(self, ctx: RuleContext, device: str, detail: str, since: float) -> bool:
        """A reception gap from device time ``since`` whose silence alert a message arriving
        ahead of the buffered fixes (an event) has already cleared: the gap's ``detail`` is added
        to that alert as an update (one outage, one alert, issue 25).  True when it was."""
        owner = ctx.book.owner_of(device)
        if owner is None:
            return False
        orders: list[str | None] = [o.id for o in self._orders_for(ctx, owner[0], owner[1], ctx.now)]
        orders.append(None)
        for order in orders:
            alert = ctx.alerts.newest_for(order, "signal_loss", device)
            if (
                alert is not None and alert.condition == "cleared"
                and alert.detail.startswith("no message") and alert.episode_start >= since
            ):
                ctx.emit(ctx.alerts.engine_note(alert, detail, ctx.now))
                return True
        return False

    # --- helpers -----------------------------------------------------------------------
    def _orders_for(self, ctx: RuleContext, role: str, person: str, t: float) -> list[Order]:
        orders = (
            ctx.book.orders_of_subject(person) if role == "subject" else ctx.book.orders_protecting(person)
        )
        return [o for o in orders if o.valid_at(t)] or orders[:1]

    def _order_id(self, ctx: RuleContext, role: str, person: str, t: float) -> str | None:
        orders = self._orders_for(ctx, role, person, t)
        return orders[0].id if orders else None

    def _may_be_open(self, ctx: RuleContext, role: str, person: str, kind: str, device: str) -> bool:
        """False when ``_open`` would find nothing: no alert of this kind for the device is open
        under any of the person's orders, or under none.

        Nearly every fix carries a healthy battery level, and each would otherwise pick the
        person's valid orders and format a note to clear an alert that is not there.  The
        episode keys to look for are made once per order book, device and kind.
        """
        book = ctx.book
        if book is not self._keys_book:
            self._keys_book, self._episode_keys = book, {}
        of_kind = self._episode_keys.get(kind)
        if of_kind is None:
            of_kind = self._episode_keys[kind] = {}
        keys = of_kind.get(device)
        if keys is None:
            orders = book.orders_of_subject(person) if role == "subject" else book.orders_protecting(person)
            keys = of_kind[device] = ((None, kind, device), *((o.id, kind, device) for o in orders))
        open_keys = ctx.alerts.open_by_key
        for key in keys:  # a loop, not any(<genexpr>): this runs for every fix
            if key in open_keys:
                return True
        return False

    def _open(self, ctx: RuleContext, role: str, person: str, kind: str, device: str) -> Alert | None:
        """The open alert of this kind for a device, under any of the person's orders or none."""
        for order in self._orders_for(ctx, role, person, ctx.now):
            alert = ctx.alerts.open_for(order.id, kind, device)
            if alert is not None:
                return alert
        return ctx.alerts.open_for(None, kind, device)

    def _raise(
        self, ctx: RuleContext, role: str, person: str, kind: str, device: str, level: Level,
        t: float, detail: str, key: str | None, late: bool, certainty: str = "observed",
    ) -> None:
        existing = self._open(ctx, role, person, kind, device)
        order = existing.order if existing else self._order_id(ctx, role, person, t)
        ctx.emit(
            ctx.alerts.raise_or_update(
                order=order, kind=kind, target=device, level=level, now=ctx.now,
                device_time=t, episode_start=existing.episode_start if existing else t,
                subject=person if role == "subject" else None,
                protected_person=person if role == "protected" else None,
                certainty=certainty, evidence=(key,) if key else (), late=late,
                device=device, detail=detail,
            )
        )

    def _clear_for(
        self, ctx: RuleContext, role: str, person: str, kind: str, device: str, note: str,
        t: float | None = None,
    ) -> None:
        """The condition of the device's ``kind`` alert ended (at device time ``t``, if known)."""
        alert = self._open(ctx, role, person, kind, device)
        if alert is not None:
            ctx.emit(ctx.alerts.clear_episode(alert.order, kind, device, ctx.now, note, t))

    def _tamper(
        self, ctx: RuleContext, subject: str, device: str, t: float, what: str, key: str, late: bool
    ) -> None:
        level: Level = "critical" if what == "strap_cut" else "alarm"
        self._raise(ctx, "subject", subject, "tamper", device, level, t, f"tamper: {what.replace('_', ' ')}", key, late)

    def _battery(
        self, ctx: RuleContext, role: str, person: str, device: str, t: float, pct: float,
        key: str, late: bool, forced: bool = False,
    ) -> None:
        trend = self.battery.get(device)
        if trend is None:  # not setdefault(device, BatteryTrend()): that builds one per fix
            trend = self.battery[device] = BatteryTrend()
        trend.add(t, pct)
        rules = ctx.rules
        if pct >= rules.battery_ok_pct:
            trend.charging = False if pct < 100 else trend.charging
            if self._may_be_open(ctx, role, person, "battery", device):
                self._clear_for(ctx, role, person, "battery", device, f"battery at {pct:.0f} %", t)
            return
        if pct > rules.battery_low_pct and not forced:
            return
        dies = trend.dies_at()
        level: Level = "warning"
        detail = f"battery low: {pct:.0f} %"
        if dies is not None and role == "subject" and self._curfew_before(ctx, person, t, dies):
            level = "alarm"
            detail += f", will run out during a curfew (~{(dies - t) / 3600:.1f} h left)"
        self._raise(ctx, role, person, "battery", device, level, t, detail, key, late)

    def _position_source(
        self, ctx: RuleContext, role: str, person: str, fix: Fix, key: str, late: bool
    ) -> None:
        """Positions too coarse to decide on for a while (no GNSS event needed): say so, quietly.

        Wi-Fi positions indoors (100-300 m) still serve most rules, so only fixes coarser than
        ``coarse_fix_m`` count, and the signal is ``info``: the centre sees why decisions about
        this device are blunt without a queue item every night a man sleeps indoors.
        """
        if fix.src == "gnss" or fix.acc <= ctx.rules.coarse_fix_m:
            if self.non_gnss_since.pop(fix.device, None) is not None:
                alert = self._open(ctx, role, person, "signal_loss", fix.device)
                if alert is not None and alert.detail.startswith("only coarse"):
                    self._clear_for(ctx, role, person, "signal_loss", fix.device, "precise positions again", fix.t)
            return
        since = self.non_gnss_since.setdefault(fix.device, fix.t)
        span = fix.t - since
        if span >= ctx.rules.non_gnss_alert_s:
            self._signal(
                ctx, role, person, fix.device, fix.t, "info",
                f"only coarse {fix.src} positions for {span / 60:.0f} min (accuracy {fix.acc:.0f} m)",
                key, late,
            )

    def _curfew_before(self, ctx: RuleContext, subject: str, t: float, dies: float) -> bool:
        """True when an inclusion-zone window is active at or starts before the battery dies."""
        for order in ctx.book.orders_of_subject(subject):
            for zone in order.inclusion_zones:
                for w in zone.schedule:
                    win = w.window_containing(dies)
                    start = w.next_start_after(t)
                    if win is not None or (start is not None and start <= dies):
                        return True
        return False

    def _signal(
        self, ctx: RuleContext, role: str, person: str, device: str, t: float, level: Level,
        detail: str, key: str | None, late: bool,
    ) -> None:
        self._raise(ctx, role, person, "signal_loss", device, level, t, detail, key, late, certainty="likely")

    def _panic(self, ctx: RuleContext, person: str, ev: DeviceEvent, late: bool) -> None:
        orders: list[Order | None] = [
            o for o in ctx.book.orders_protecting(person) if o.valid_at(ev.t)
        ] or [None]
        for order in orders:
            ctx.emit(
                ctx.alerts.raise_or_update(
                    order=order.id if order else None, kind="panic", target=person,
                    level="critical", now=ctx.now, device_time=ev.t, episode_start=ev.t,
                    subject=order.subject if order else None, protected_person=person,
                    certainty="observed", evidence=(ev.key,), late=late, device=ev.device,
                    detail="panic button pressed on the victim device",
                )
            )

    def _ble(self, ctx: RuleContext, person: str, ev: DeviceEvent, late: bool) -> None:
        """Her device hears his ankle monitor over Bluetooth: contact, whatever GPS says."""
        peer = str(ev.detail.get("peer", ""))
        owner = ctx.book.owner_of(peer)
        if owner is None or owner[0] != "subject":
            return
        subject = owner[1]
        for order in ctx.book.orders_of_subject(subject):
            if not order.valid_at(ev.t) or not any(p.protected_person == person for p in order.proximity):
                continue
            ctx.emit(
                ctx.alerts.raise_or_update(
                    order=order.id, kind="proximity", target=f"{subject}~{person}",
                    level="critical", now=ctx.now, device_time=ev.t, episode_start=ev.t,
                    subject=subject, protected_person=person, certainty="observed",
                    evidence=(ev.key,), late=late, device=ev.device,
                    detail=f"Bluetooth: victim device heard ankle monitor {peer} (rssi {ev.detail.get('rssi')} dBm)",
                )
            )
