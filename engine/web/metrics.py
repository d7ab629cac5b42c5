"""Prometheus metrics of one running service, in a registry of its own.

Two feeds: a service listener sees every alert change as it is published
(fix-to-alert latency, time to acknowledge and to close by kind and level,
change counters, dead letters), and
``refresh`` runs at scrape time to copy the engine's plain counters
(``EngineStats``) and current state (open alerts, silent devices, broker,
queue) into the Prometheus objects.  The metric names are fixed: deploy/ and
the Grafana dashboards use them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from engine.core.alert_records import ALARM_RANK, LEVEL_RANK, LEVELS, Alert, peak_rank
from engine.core.effects import Effects
from engine.runtime.service import Service

_go_float: Callable[[float], str] = floatToGoString  # a bucket bound as the client writes it (untyped)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
ACK_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
CLOSE_BUCKETS = (60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0)


class EngineMetrics:
    """All emguard metrics for one Service; attach with ``service.listeners.append(m.on_effects)``."""

    def __init__(self, service: Service, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.fixes_received = Counter(
            "emguard_fixes_received", "Fixes decoded from device messages.", registry=r
        )
        self.fixes_rejected = Counter(
            "emguard_fixes_rejected", "Messages rejected by validation.", ["reason"], registry=r
        )
        self.dead_letters = Counter(
            "emguard_dead_letters", "Dead-letter records published.", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "emguard_device_duplicates",
            "Fixes and events ignored as repeats of a (device, seq) already taken in.",
            registry=r,
        )
        self.seq_restarts = Counter(
            "emguard_device_seq_restarts",
            "Fixes and events whose device restarted its seq numbering (a reboot); taken in.",
            registry=r,
        )
        self.ingest_lag = BulkHistogram(
            "emguard_ingest_lag_seconds",
            "Arrival minus device time of accepted fixes.",
            LAG_BUCKETS,
            r,
        )
        self.fix_to_alert = Histogram(
            "emguard_fix_to_alert_seconds",
            "Publish time minus arrival of the fix that raised or raised the level of an alert.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "emguard_alerts",
            "Alerts opened, by kind and opening level.",
            ["kind", "level"],
            registry=r,
        )
        self.alert_changes = Counter(
            "emguard_alert_changes",
            "Published alert changes, by state after the change.",
            ["state"],
            registry=r,
        )
        self.open_alerts = Gauge(
            "emguard_open_alerts",
            "Alerts not yet closed (the centre's queue, cleared conditions included), by level.",
            ["level"],
            registry=r,
        )
        self.past_deadline = Gauge(
            "emguard_open_alerts_past_deadline",
            "Unacknowledged alerts (open or escalated) past their deadline.",
            registry=r,
        )
        self.alarms_past_deadline = Gauge(
            "emguard_alarms_past_deadline",
            "Alarm and critical alerts not closed and unacknowledged past their deadline, "
            "by kind and level.",
            ["kind", "level"],
            registry=r,
        )
        self.ack_time = Histogram(
            "emguard_ack_time_seconds",
            "Time from raising an alert to its first acknowledgement, by kind and level at ack.",
            ["kind", "level"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.close_time = Histogram(
            "emguard_close_time_seconds",
            "Time from raising an alert to its close (by a person or, for info/warning, the "
            "engine), by kind and the highest level it reached.",
            ["kind", "level"],
            buckets=CLOSE_BUCKETS,
            registry=r,
        )
        self._past_deadline_labels: set[tuple[str, str]] = set()
        self.devices_silent = Gauge(
            "emguard_devices_silent", "Devices currently considered silent.", registry=r
        )
        self.broker_connected = Gauge(
            "emguard_broker_connected", "1 while connected to the MQTT broker.", registry=r
        )
        self.broker_publishing = Gauge(
            "emguard_broker_publishing",
            "1 while the outbox's own MQTT connection (alerts, warnings, commands) is up.",
            registry=r,
        )
        self.store_connected = Gauge(
            "emguard_store_connected", "1 while the state store is reachable.", registry=r
        )
        self.queue_depth = Gauge(
            "emguard_queue_depth", "Messages waiting in the inbox.", registry=r
        )
        self.fixes_waiting = Gauge(
            "emguard_fixes_waiting",
            "Fixes received but held in reorder buffers (a gap before them), not yet evaluated.",
            registry=r,
        )
        self.state_commits = Counter(
            "emguard_state_commits", "Durable commits of state and outbox (one per micro-batch).",
            registry=r,
        )
        self.state_commit_bytes = Counter(
            "emguard_state_commit_bytes", "Bytes of case state written by durable commits.", registry=r
        )
        self.state_commit_seconds = Counter(
            "emguard_state_commit_seconds",
            "Time spent in durable commits (encoding the changed cases and the store round trip).",
            registry=r,
        )
        self.task_failures = Counter(
            "emguard_task_failures",
            "Failures of the service's supervised tasks (engine.runtime.supervise), by task.",
            ["task"],
            registry=r,
        )
        self.ready = Gauge(
            "emguard_ready",
            "1 while /readyz says ready: both broker connections, the store, every task, lag.",
            registry=r,
        )
        self.outgoing_shortened = Counter(
            "emguard_outgoing_shortened",
            "Outgoing messages over the publish size limit, published shortened (engine.runtime.outbound).",
            registry=r,
        )
        self._seen_task_failures: dict[str, int] = {}
        self._seen_shortened = 0
        self._seen_commits = (0, 0, 0.0)
        self._seen_fixes = 0
        self._seen_duplicates = 0
        self._seen_restarts = 0
        self._seen_rejected: dict[str, int] = {}
        for level in LEVELS:
            self.open_alerts.labels(level=level)

    def on_effects(self, effects: Effects, now: float) -> None:
        """Service listener: count changes and dead letters, time fix-to-alert and ack."""
        for change in effects.changes:
            alert = change.alert
            self.alert_changes.labels(state=alert.state).inc()
            if change.change == "raised" or (
                change.change == "level"
                and change.previous_level is not None
                and LEVEL_RANK[alert.level] > LEVEL_RANK[change.previous_level]
            ):
                # an alert counts once at every level it reaches (a warning confirmed as an
                # alarm is an alarm for the agreed-reaction-time statistics)
                self.alerts.labels(kind=alert.kind, level=alert.level).inc()
            if change.change in ("raised", "level") and change.arrival is not None:
                self.fix_to_alert.observe(max(0.0, now - change.arrival))
            if change.change == "ack" and _first_ack(alert):
                self.ack_time.labels(kind=alert.kind, level=alert.level).observe(
                    max(0.0, alert.history[-1].at - alert.raised_at)
                )
            elif change.change == "close":
                self.close_time.labels(kind=alert.kind, level=LEVELS[peak_rank(alert)]).observe(
                    max(0.0, alert.history[-1].at - alert.raised_at)
                )
        for message in effects.messages:
            if message.channel == "deadletter":
                self.dead_letters.labels(reason=str(message.payload.get("reason", "unknown"))).inc()
        self._drain_lag()

    def dead_letter_total(self) -> int:
        """Dead letters published since start, all reasons (``/readyz`` shows it in the console
        header, where parsing the Prometheus text would be awkward)."""
        total = 0.0
        for metric in self.dead_letters.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
        return int(total)

    def refresh(self) -> None:
        """Copy engine counters and current state into the metrics (called at scrape time)."""
        engine = self.service.engine
        stats = engine.stats
        if stats.fixes > self._seen_fixes:
            self.fixes_received.inc(stats.fixes - self._seen_fixes)
            self._seen_fixes = stats.fixes
        if stats.duplicates > self._seen_duplicates:
            self.duplicates.inc(stats.duplicates - self._seen_duplicates)
            self._seen_duplicates = stats.duplicates
        if stats.seq_restarts > self._seen_restarts:
            self.seq_restarts.inc(stats.seq_restarts - self._seen_restarts)
            self._seen_restarts = stats.seq_restarts
        for reason, count in stats.rejected.items():
            seen = self._seen_rejected.get(reason, 0)
            if count > seen:
                self.fixes_rejected.labels(reason=reason).inc(count - seen)
                self._seen_rejected[reason] = count
        self._drain_lag()
        self._drain_commits()
        now = self.service.clock()
        counts = dict.fromkeys(LEVELS, 0)
        overdue = 0
        alarms: dict[tuple[str, str], int] = {}
        for alert in engine.alerts.alerts.values():
            if alert.is_open:
                counts[alert.level] += 1
                if alert.needs_ack and now >= alert.deadline:
                    overdue += 1
                    if LEVEL_RANK[alert.level] >= ALARM_RANK:
                        key = (alert.kind, alert.level)
                        alarms[key] = alarms.get(key, 0) + 1
        for level, n in counts.items():
            self.open_alerts.labels(level=level).set(n)
        self.past_deadline.set(overdue)
        # series once seen are kept at 0 (not removed): a graph then shows the fall to none
        self._past_deadline_labels |= set(alarms)
        for kind, alarm_level in sorted(self._past_deadline_labels):
            self.alarms_past_deadline.labels(kind=kind, level=alarm_level).set(
                alarms.get((kind, alarm_level), 0)
            )
        self.devices_silent.set(len(engine.silent))
        self.broker_connected.set(1 if self.service.connected else 0)
        self.broker_publishing.set(1 if getattr(self.service, "publishing", False) else 0)
        self.store_connected.set(1 if _store_connected(self.service) else 0)
        self.queue_depth.set(self.service.inbox.qsize())
        self._drain_supervision()
        self.fixes_waiting.set(sum(len(t.pending) for t in engine.tracks.values()))

    def render(self) -> tuple[bytes, str]:
        """Refresh, then the text exposition format."""
        self.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _drain_commits(self) -> None:
        service = self.service
        commits, size, seconds = self._seen_commits
        self.state_commits.inc(service.commits - commits)
        self.state_commit_bytes.inc(service.committed_bytes - size)
        self.state_commit_seconds.inc(max(0.0, service.commit_seconds - seconds))
        self._seen_commits = (service.commits, service.committed_bytes, service.commit_seconds)

    def _drain_supervision(self) -> None:
        service = self.service
        for task, count in service.supervisor.failures.items():
            seen = self._seen_task_failures.get(task, 0)
            if count > seen:
                self.task_failures.labels(task=task).inc(count - seen)
                self._seen_task_failures[task] = count
        if service.oversized > self._seen_shortened:
            self.outgoing_shortened.inc(service.oversized - self._seen_shortened)
            self._seen_shortened = service.oversized
        self.ready.set(1 if service.readiness()["ready"] else 0)

    def _drain_lag(self) -> None:
        lags = self.service.engine.stats.lag_s
        if lags:
            self.ingest_lag.observe_many(lags)
            lags.clear()


class BulkHistogram:
    """A Prometheus histogram fed a batch of observations at a time: the ingest lag of every fix.

    ``Histogram.observe`` took ~0.9 us per fix (a lock, a walk of the buckets, a sum per call),
    about 3 % of a compiled worker's time per message; here a batch is counted with a bisect
    per value and one sum.  A custom collector (the client's public API), exposed as the same
    ``_bucket``, ``_count`` and ``_sum`` series (no ``_created``, which nothing here reads).  Fed
    and read on the event loop only (``/metrics`` is an async route).
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [float(b) for b in buckets]
        if self.bounds[-1] != math.inf:
            self.bounds.append(math.inf)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        registry.register(self)

    def observe_many(self, values: Sequence[float]) -> None:
        """Count each value in the first bucket whose upper bound is at or above it."""
        bounds, counts = self.bounds, self.counts
        for v in values:
            counts[bisect_left(bounds, v)] += 1
        self.total += math.fsum(values)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            buckets.append((_go_float(bound), cumulative))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.total
        )


def _first_ack(alert: Alert) -> bool:
    """True when the alert's last change is its first acknowledgement (reaction time is
    measured from the alarm to the first human acknowledgement; a re-ack after a rise is not
    a second reaction to the same alarm)."""
    return sum(1 for h in alert.history if h.state == "acknowledged") == 1


def _store_connected(service: Any) -> bool:
    """The service's state store health; in-memory state (no store attribute) is always up."""
    flag = getattr(service, "store_connected", None)
    return True if flag is None else bool(flag)
