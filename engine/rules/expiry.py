"""Orders over time: warn well before an order lapses, never let a lapse end monitoring silently.

A behavioural order (gedragsaanwijzing, art. 509hh Sv) lasts at most 90 days
and its extension is sometimes forgotten: the centre is warned 14 days ahead
(warning) and 3 days ahead (alarm), and an order that lapses while any of its
alerts is still open raises an alarm instead of quietly dropping them.
"""

from __future__ import annotations

from engine.alerts import Level
from engine.rules.context import RuleContext

DAY = 86400.0


def check_expiry(ctx: RuleContext) -> None:
    """Raise, rise or resolve ``order_expiry`` alerts for every order at processing time ``now``."""
    warn_days, alarm_days = ctx.rules.expiry_warn_days
    for order in sorted(ctx.book.orders.values(), key=lambda o: o.id):
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
                ctx.emit(ctx.alerts.resolve_episode(order.id, "order_expiry", target, ctx.now, "order extended"))
            continue
        ctx.emit(
            ctx.alerts.raise_or_update(
                order=order.id, kind="order_expiry", target=target, level=level, now=ctx.now,
                device_time=ctx.now, episode_start=order.valid_until, subject=order.subject,
                certainty="observed", detail=detail,
            )
        )
