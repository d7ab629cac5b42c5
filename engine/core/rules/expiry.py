"""Orders over time: warn well before an order lapses, never let a lapse end monitoring silently.

A behavioural order (gedragsaanwijzing, art. 509hh Sv) lasts at most 90 days
and its extension is sometimes forgotten: the centre is warned 14 days ahead
(warning) and 3 days ahead (alarm), and an order that lapses while any of its
alerts is still open raises an alarm instead of quietly dropping them.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from engine.core.alert_records import Level
from engine.core.orders import Order, OrderBook
from engine.core.rules.context import RuleContext

DAY = 86400.0


def check_expiry(ctx: RuleContext, orders: Iterable[Order] | None = None) -> None:
    """Raise, rise or clear ``order_expiry`` alerts for every order at processing time ``now``.

    ``orders`` (in id order) limits the pass to those; ``ExpiryWatch`` passes the ones for
    which the pass can do anything.
    """
    warn_days, alarm_days = ctx.rules.expiry_warn_days
    if orders is None:
        orders = sorted(ctx.book.orders.values(), key=lambda o: o.id)
    for order in orders:
        remaining = order.valid_until - ctx.now
        target = order.id
        level: Level | None = None
        if remaining <= 0:
            still_open = [
                a for a in ctx.alerts.open_alerts() if a.order == order.id and a.kind != "order_expiry"
            ]
            if still_open:
                level = "alarm"
                detail = f"order lapsed with {len(still_open)} open alert(s): they stay open until handled"
            elif ctx.alerts.open_for(order.id, "order_expiry", target) is None:
                continue
            else:
                level = "alarm"
                detail = "order lapsed: monitoring under this order has ended"
        elif remaining <= alarm_days * DAY:
            level, detail = "alarm", f"order ends in {remaining / DAY:.1f} days: extend or confirm its end"
        elif remaining <= warn_days * DAY:
            level, detail = "warning", f"order ends in {remaining / DAY:.0f} days: extension needed?"
        else:
            if ctx.alerts.open_for(order.id, "order_expiry", target) is not None:
                ctx.emit(ctx.alerts.clear_episode(order.id, "order_expiry", target, ctx.now, "order extended"))
            continue
        ctx.emit(
            ctx.alerts.raise_or_update(
                order=order.id, kind="order_expiry", target=target, level=level, now=ctx.now,
                device_time=ctx.now, episode_start=order.valid_until, subject=order.subject,
                certainty="observed", detail=detail,
            )
        )


class ExpiryWatch:
    """``check_expiry`` every tick without a pass over every order.

    An order can only lead to an emit when it ends within the warning period (or has ended)
    or when its ``order_expiry`` alert is open; ``check_expiry`` skips any other order.  So
    each tick passes exactly those: found by bisecting the orders sorted by ``valid_until``
    (kept per order book), and from the set of orders with an open ``order_expiry`` alert
    (only ``check_expiry`` opens one; the set is read from the alert book's open keys when
    that dict is replaced, e.g. by a restore, and updated for every order passed).  The
    emits are the same, in the same (id) order.
    """

    def __init__(self) -> None:
        self._book: OrderBook | None = None
        self._ends: list[float] = []
        self._by_end: list[Order] = []
        self._by_id: dict[str, Order] = {}
        self._open_keys: object = None
        self._open: set[str] = set()

    def check(self, ctx: RuleContext) -> None:
        book, alerts = ctx.book, ctx.alerts
        if book is not self._book:
            self._by_end = sorted(book.orders.values(), key=lambda o: o.valid_until)
            self._ends = [o.valid_until for o in self._by_end]
            self._by_id = {o.id: o for o in self._by_end}
            self._book = book
        if alerts.open_by_key is not self._open_keys:
            self._open = {k[0] for k in alerts.open_by_key if k[1] == "order_expiry" and k[0] is not None}
            self._open_keys = alerts.open_by_key
        # a second of slack: the rule itself decides with ``valid_until - now`` as before
        horizon = ctx.now + max(ctx.rules.expiry_warn_days) * DAY + 1.0
        due = {o.id: o for o in self._by_end[: bisect.bisect_right(self._ends, horizon)]}
        for order_id in self._open:
            order = self._by_id.get(order_id)
            if order is not None:
                due[order_id] = order
        if not due:
            return
        check_expiry(ctx, [due[k] for k in sorted(due)])
        for order_id in due:
            if alerts.open_for(order_id, "order_expiry", order_id) is not None:
                self._open.add(order_id)
            else:
                self._open.discard(order_id)
