"""Who hears about an alert change: the centre always, the victim and the offender by rule.

* Centre: every change, full detail (contract §5).
* Victim: warned once the alert reaches ``victim_warn_level`` (two-tier
  response: a ``warning`` goes to the centre only, so an operator can contact
  the offender first); warned again on each further rise; told when the engine
  saw the danger pass (the condition cleared) and what was done when the centre
  acknowledges, escalates or closes.  A panic is confirmed to her at once.
* Offender: ``leave_area`` for an exclusion zone; for a proximity alert ``contact_centre`` at
  alarm only where the order says ``offender_prompt: "auto"`` (by default an operator
  decides and calls him: an automatic prompt timed on her moving position tells him she is
  near).  An operator's ``prompt`` on an alert sends his ankle monitor(s) ``contact_centre``
  (``operator_prompt``: a fixed level, nothing from the alert).  Never anything about the victim.
"""

from __future__ import annotations

from engine.core.alert_records import LEVEL_RANK, Alert, AlertActionError, AlertChange
from engine.core.config import RuleConfig
from engine.core.messages import (
    Outgoing,
    centre_message,
    operator_prompt,
    subject_prompt,
    victim_status,
    victim_warning,
)
from engine.core.orders import OrderBook

VICTIM_KINDS = ("proximity", "panic")


def subject_devices(book: OrderBook, alert: Alert) -> tuple[str, ...]:
    """The ankle monitors of the alert's subject (none for an alert without one)."""
    subject = book.subjects.get(alert.subject) if alert.subject else None
    return subject.devices if subject is not None else ()


def check_prompt(book: OrderBook, alert: Alert | None) -> None:
    """Refuse an operator's ``prompt`` on an open alert whose subject has no ankle monitor
    (``AlertActionError``); an unknown or closed alert is left to ``AlertBook.act``."""
    if alert is not None and alert.is_open and alert.subject and not subject_devices(book, alert):
        raise AlertActionError(
            f"alert {alert.alert_id}: subject {alert.subject} has no ankle monitor to prompt"
        )


class Notifier:
    """Fans alert changes out to the centre, the victim and the offender."""

    def __init__(self, prefix: str, rules: RuleConfig) -> None:
        self.prefix = prefix
        self.rules = rules
        self.victim_rank: dict[str, int] = {}  # alert id -> highest level the victim was told

    def on_change(self, book: OrderBook, change: AlertChange, now: float) -> list[Outgoing]:
        """Messages for one alert change, centre first."""
        alert = change.alert
        out = [centre_message(self.prefix, alert)]
        victim_devices = self._victim_devices(book, alert.protected_person)
        concerns_victim = alert.kind in VICTIM_KINDS or (
            alert.kind == "exclusion" and alert.protected_person is not None
        )
        if concerns_victim and victim_devices:
            rank = LEVEL_RANK[alert.level]
            told = self.victim_rank.get(alert.alert_id, -1)
            if change.change in ("raised", "level"):
                order = book.orders.get(alert.order) if alert.order else None
                level = (order.victim_warn_level if order else None) or self.rules.victim_warn_level
                warn_rank = LEVEL_RANK[level]
                if alert.kind == "panic" or (rank >= warn_rank and rank > told):
                    self.victim_rank[alert.alert_id] = rank
                    out += [victim_warning(self.prefix, d, alert, now) for d in victim_devices]
                elif 0 <= rank < told:
                    # a real fall (the rule's hysteresis and dwell): she hears the lower level
                    # while it is still one she is warned at, and a later rise warns her again
                    self.victim_rank[alert.alert_id] = rank
                    if rank >= warn_rank:
                        out += [victim_warning(self.prefix, d, alert, now) for d in victim_devices]
            elif told >= 0 and change.change in ("ack", "escalate", "clear", "close"):
                out += [victim_status(self.prefix, d, alert, now) for d in victim_devices]
                if change.change == "close":
                    self.victim_rank.pop(alert.alert_id, None)
        if change.change == "prompt":
            out += [operator_prompt(self.prefix, d, now) for d in subject_devices(book, alert)]
        if change.change in ("raised", "level") and alert.subject:
            instruction = None
            if alert.kind == "exclusion" and LEVEL_RANK[alert.level] >= LEVEL_RANK["alarm"]:
                instruction = "leave_area"
            elif alert.kind == "proximity" and LEVEL_RANK[alert.level] >= LEVEL_RANK["alarm"]:
                order = book.orders.get(alert.order) if alert.order else None
                rose = change.previous_level is None or (
                    LEVEL_RANK[alert.level] > LEVEL_RANK[change.previous_level]
                )
                if order is not None and order.offender_prompt == "auto" and rose:
                    instruction = "contact_centre"
            if instruction:
                subject = book.subjects.get(alert.subject)
                for device in subject.devices if subject else ():
                    out.append(subject_prompt(self.prefix, device, instruction, alert.level, now))
        return out

    @staticmethod
    def _victim_devices(book: OrderBook, person: str | None) -> tuple[str, ...]:
        if person is None or person not in book.protected_persons:
            return ()
        return book.protected_persons[person].devices
