"""The service's readiness: whether it does its job now, and each reason it may not.

``/readyz`` answers with this, and an orchestrator routes and restarts by it: ready only when
device messages reach the service and alerts can leave (each has its own connection), the store
answers, every supervised task runs and no message has waited longer than ``READY_MAX_LAG_S``.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any, Protocol

from devices.timeutil import format_time
from engine.runtime.intake import Inbox
from engine.runtime.supervise import Supervisor

READY_MAX_LAG_S = 30.0  # not ready while the oldest waiting message is older than this


class Observed(Protocol):
    """What readiness reads of the service (``engine.runtime.service.Service``)."""

    inbox: Inbox[Any]
    clock: Callable[[], float]
    supervisor: Supervisor
    connected: bool
    store_connected: bool
    last_processed: float
    unreadable_state: list[str]

    @property
    def publishing(self) -> bool: ...
    @property
    def outbox(self) -> Sized: ...
    @property
    def uncommitted(self) -> int: ...


def readiness_report(service: Observed) -> dict[str, Any]:
    """Whether the service does its job now, and each reason it may not (``/readyz``).

    Ready only when device messages reach us and alerts can leave (each has its own
    connection), the store answers, every supervised task runs and no message has waited
    longer than ``READY_MAX_LAG_S``.
    """
    now = service.clock()
    lag = max(0.0, now - service.inbox[0][0]) if service.inbox else 0.0
    supervisor = service.supervisor
    problems = []
    if not service.connected:
        problems.append("not subscribed to the broker")
    if not service.publishing:
        problems.append("publishing connection down")
    if not service.store_connected:
        problems.append("state store unreachable")
    if supervisor.fatal is not None:
        problems.append(f"failed: {supervisor.fatal}")
    elif not supervisor.healthy:
        down = sorted(n for n, h in supervisor.health.items() if not h.running)
        problems.append(f"task(s) not running: {', '.join(down)}")
    if lag > READY_MAX_LAG_S:
        problems.append(f"processing lag {lag:.0f} s")
    last = service.last_processed
    return {
        "ready": not problems,
        "problems": problems,
        "broker_connected": service.connected,
        "publishing_connected": service.publishing,
        "store_connected": service.store_connected,
        "tasks": supervisor.report(),
        "inbox_depth": service.inbox.qsize(),
        "outbox_depth": len(service.outbox),
        "uncommitted": service.uncommitted,
        "lag_s": round(lag, 3),
        "last_processed": format_time(last) if last else None,
        # not a reason to be unready (every other case is monitored), but never silent
        "unreadable_state_parts": len(service.unreadable_state),
    }

