"""Watches the service's long-lived tasks, so none of them can die without anyone noticing.

Before this, an exception in the commit task (one fix with a seq beyond int64) ended that
task and nothing else: nothing was committed, acknowledged or published from then on, for any
device, while ``/readyz`` stayed green.  Every long-lived task of ``engine.runtime.service`` now runs
under a ``Supervisor``:

* a task whose failure leaves the engine's state as it was (the MQTT connections, the timer
  tick) is logged with its cause and restarted after a short backoff, up to ``MAX_RESTARTS``
  within ``RESTART_WINDOW_S``;
* a task whose failure may leave state half-applied (processing, committing), or one that
  keeps failing, is fatal: the supervisor records why, readiness fails at once, and the stop
  event is set so the service drains what it can and ``emguard serve`` exits non-zero.  The
  orchestrator restarts the process, which restores the last committed state; messages not
  acknowledged are redelivered by the broker (``engine.runtime.poison`` keeps one that fails twice
  from doing this forever).

No I/O of its own: it only logs, counts and sets events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError
from engine.redact import redact_text

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # restarts of one task within the window before it counts as fatal
RESTART_WINDOW_S = 60.0
RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


class ServiceFailed(EngineError):
    """A supervised task failed in a way the process cannot repair itself; the message says which and why."""


@dataclass(slots=True)
class TaskHealth:
    """What readiness and metrics report of one supervised task."""

    name: str
    restartable: bool
    running: bool = False
    failures: int = 0
    last_error: str | None = None
    recent: deque[float] = field(default_factory=deque)


class Supervisor:
    """Runs named tasks; restarts the restartable ones, turns any other failure into a stop."""

    def __init__(self, stop: asyncio.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self.stop = stop
        self.clock = clock
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.health: dict[str, TaskHealth] = {}
        self.failures: Counter[str] = Counter()
        self.fatal: str | None = None
        self.stopping = False

    def start(self, name: str, factory: TaskFactory, *, restartable: bool) -> asyncio.Task[None]:
        """Start ``factory()`` as task ``name`` under supervision; the task returned is the watcher."""
        self.health[name] = TaskHealth(name, restartable)
        task = asyncio.create_task(self._watch(name, factory), name=name)
        self.tasks[name] = task
        return task

    @property
    def healthy(self) -> bool:
        """No fatal failure and every task that should run is running."""
        return self.fatal is None and all(h.running for h in self.health.values())

    def report(self) -> dict[str, Any]:
        """Per task: running, failures so far, the last error (for /readyz)."""
        return {
            name: {"running": h.running, "failures": h.failures, "last_error": h.last_error}
            for name, h in self.health.items()
        }

    def fail(self, reason: str) -> None:
        """Give up: readiness fails and the service stops (``emguard serve`` then exits non-zero)."""
        if self.fatal is None:
            self.fatal = reason
            log.critical("service cannot go on safely, stopping: %s", reason)
        self.stop.set()

    async def cancel(self, names: Sequence[str] | None = None) -> None:
        """Cancel the named tasks (all when None) and wait for them to end."""
        chosen = [self.tasks[n] for n in (names if names is not None else list(self.tasks))]
        for task in chosen:
            task.cancel()
        for task in chosen:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, name: str, factory: TaskFactory) -> None:
        health = self.health[name]
        while True:
            health.running = True
            try:
                await factory()
                cause = "returned although it should run until stopped"
                if self.stop.is_set() or self.stopping:
                    health.running = False
                    return
            except asyncio.CancelledError:
                health.running = False
                raise
            except Exception as exc:  # the point of this class: no failure goes unnoticed
                # /readyz shows it without a token: never a password an error text carried
                cause = redact_text(f"{type(exc).__name__}: {exc}")
                log.exception("task %s failed", name)
            health.running = False
            health.failures += 1
            health.last_error = cause[:500]
            self.failures[name] += 1
            now = self.clock()
            health.recent.append(now)
            while health.recent and now - health.recent[0] > RESTART_WINDOW_S:
                health.recent.popleft()
            if not health.restartable:
                self.fail(f"task {name} failed: {cause}")
                return
            if len(health.recent) > MAX_RESTARTS:
                self.fail(
                    f"task {name} failed {len(health.recent)} times within "
                    f"{RESTART_WINDOW_S:.0f} s, last: {cause}"
                )
                return
            wait = RESTART_BACKOFF_S[min(len(health.recent), len(RESTART_BACKOFF_S)) - 1]
            log.warning("restarting task %s in %.1f s", name, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), wait)
            if self.stop.is_set():
                return
