"""Cases: the unit of state that one fix can touch.

A case is a subject together with everyone his orders protect, merged
transitively (a victim protected from two men joins their cases).  Everything
the engine decides for a message of one device reads and writes only that
device's case.  Two things rest on this: scale-out (``engine.runtime.nats_intake`` routes
each message to its case's partition, one worker owns a partition) and incremental persistence (``engine.core.case_state``: a
commit rewrites only the cases its batch touched, not the whole state).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.alert_records import Alert
from engine.core.orders import Order, OrderBook

#: the case of state that belongs to no device, person or order (kept for completeness)
LOOSE = "G:loose"


@dataclass(frozen=True, slots=True)
class Cases:
    """Which case every device, person and order of one order book belongs to."""

    of_device: dict[str, str]
    of_person: dict[str, str]  # "S:{subject}" / "P:{protected person}" -> case
    of_order: dict[str, str]
    devices: dict[str, tuple[str, ...]]  # case -> its devices in the book
    orders: dict[str, tuple[Order, ...]]  # case -> its orders

    def device_case(self, device: str) -> str:
        """A device unknown to the book is a case of its own (its track is still kept)."""
        return self.of_device.get(device) or f"D:{device}"

    def devices_in(self, case: str) -> tuple[str, ...]:
        if case.startswith("D:"):
            return (case[2:],)
        return self.devices.get(case, ())

    def alert_case(self, alert: Alert) -> str:
        """An alert belongs to its order's case, else to its subject's, person's or device's."""
        if alert.order is not None and alert.order in self.of_order:
            return self.of_order[alert.order]
        for key in (f"S:{alert.subject}", f"P:{alert.protected_person}"):
            case = self.of_person.get(key)
            if case is not None:
                return case
        if alert.device is not None:
            return self.device_case(alert.device)
        if alert.order is not None:
            return f"O:{alert.order}"  # an order no longer in the book
        return LOOSE


def cases_of(book: OrderBook) -> Cases:
    """The connected groups of subjects and protected persons over the book's orders."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for order in book.orders.values():
        find(f"S:{order.subject}")
        for rule in order.proximity:
            union(f"S:{order.subject}", f"P:{rule.protected_person}")
        for zone in order.zones:
            if zone.protects:
                union(f"S:{order.subject}", f"P:{zone.protects}")
    for subject in book.subjects:
        find(f"S:{subject}")
    for person in book.protected_persons:
        find(f"P:{person}")
    for role, person in book.device_owner.values():
        find(("S:" if role == "subject" else "P:") + person)
    of_person = {x: find(x) for x in list(parent)}
    of_device: dict[str, str] = {}
    devices: dict[str, list[str]] = {}
    for device, (role, person) in book.device_owner.items():
        case = of_person[("S:" if role == "subject" else "P:") + person]
        of_device[device] = case
        devices.setdefault(case, []).append(device)
    of_order: dict[str, str] = {}
    orders: dict[str, list[Order]] = {}
    for order in book.orders.values():
        case = of_person[f"S:{order.subject}"]
        of_order[order.id] = case
        orders.setdefault(case, []).append(order)
    return Cases(
        of_device,
        of_person,
        of_order,
        {c: tuple(sorted(d)) for c, d in devices.items()},
        {c: tuple(sorted(o, key=lambda o: o.id)) for c, o in orders.items()},
    )


def regrouped(old: Cases, new: Cases) -> set[str]:
    """The old and new cases of everything that left the book, joined it or changed case.

    Their stored parts must be written again: a part lost or gained a member's state, or its
    case no longer exists (it is dropped, as an empty part).  Every other case is unchanged,
    so an order change costs in proportion to the cases it touches, not to the caseload.
    """
    touched: set[str] = set()
    for before, after, outside in (
        (old.of_device, new.of_device, "D:"),
        (old.of_person, new.of_person, None),
        (old.of_order, new.of_order, "O:"),
    ):
        for key, case in before.items():
            now = after.get(key)
            if now != case:
                touched.add(case)
                if now is not None:
                    touched.add(now)
                elif outside is not None:
                    touched.add(outside + key)  # its state is kept, outside any case
        for key, case in after.items():
            if key not in before:
                touched.add(case)
                if outside is not None:
                    touched.add(outside + key)  # a device known before only by its messages
    return touched
