"""NATS JetStream backbone of the scale-out engine: names, subjects, streams and partitions.

Beyond one process (``emguard serve --transport nats``) a NATS cluster is the devices' MQTT
broker and the engine's work queue:

* ``EM_DEV`` (R3) holds every device message, captured from the MQTT topics by NATS's own
  mapping (``em/dev/AM-1/fix`` is ``em.dev.AM-1.fix``).  The intake (``engine.runtime.nats_intake``,
  any number of replicas sharing one durable pull consumer) routes each to its case's
  partition subject in ``EM_PART``.
* ``EM_PART`` (R3) holds the routed messages on ``emguard.part.{n}``, ``n`` = a stable hash of
  the case key mod ``partitions``.  Each partition has its own durable pull consumer; exactly
  one worker (``engine.runtime.nats_worker``), the holder of the partition's lease, pulls from it.
* ``EM_OUT`` (R3) captures what the engine sends (``em.alerts.>``, ``em.cmd.>``,
  ``em.deadletter``), published with a ``Nats-Msg-Id`` so a republished outbox entry is
  stored once.  MQTT subscribers (the centre, victims' phones) get them through NATS's MQTT
  listener as before.
* KV ``em_leases``: one key per partition, the owner's id; the bucket's TTL makes a lease
  lapse when its owner stops renewing.  KV ``em_workers``: one heartbeat key per live worker.
* KV ``em_view``: one key per partition, its owner's latest snapshot of the partition's device
  health (``engine.runtime.nats_caseview``), which every worker's centre API merges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from engine.errors import ConfigError

log = logging.getLogger(__name__)

DEV_STREAM = "EM_DEV"
PART_STREAM = "EM_PART"
OUT_STREAM = "EM_OUT"
INTAKE_CONSUMER = "intake"
PART_SUBJECT = "emguard.part"
LEASES = "em_leases"
WORKERS = "em_workers"
VIEWS = "em_view"
DEDUP_WINDOW_S = 120.0  # a republish within this window is stored once (Nats-Msg-Id)


class NatsSetupError(ConfigError):
    """The NATS cluster did not accept our streams or buckets (e.g. JetStream is off)."""


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """Settings of a NATS worker; every field has an EMGUARD_NATS_* / EMGUARD_* variable."""

    servers: tuple[str, ...]
    redis: str
    orders: str
    prefix: str = "em"
    partitions: int = 16
    replicas: int = 3
    lease_s: float = 3.0  # a partition's lease lapses this long after its owner's last renewal
    heartbeat_s: float = 1.0
    ack_wait_s: float = 4.0  # a message pulled by a worker that died is redelivered after this
    namespace: str = "emguard"
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    intake: bool = True  # this process also runs an intake replica
    evaluate: bool = True  # this process takes partition leases (False: an intake replica only)
    config: str | None = None  # TOML with [rules] and [deadlines] (load_engine_config)
    health_port: int = 0  # /healthz and /readyz for probes (0: none)
    redis_replicas: int = 0  # acks wait until this many Redis replicas hold the commit (WAIT)
    view_s: float = 2.0  # each owned partition's device health is published this often (em_view)
    # the engine's NATS login (`emguard deploy nats` writes it to engine-nats.env); None: anonymous
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> NatsSettings:
        """Read EMGUARD_NATS_URL (comma-separated servers), EMGUARD_REDIS, EMGUARD_ORDERS, ..."""
        e = dict(os.environ if env is None else env)
        missing = [v for v in ("EMGUARD_NATS_URL", "EMGUARD_REDIS", "EMGUARD_ORDERS") if not e.get(v)]
        if missing:
            raise NatsSetupError(f"set {', '.join(missing)} for the NATS transport")
        values: dict[str, object] = {
            "servers": tuple(s.strip() for s in e["EMGUARD_NATS_URL"].split(",") if s.strip()),
            "redis": e["EMGUARD_REDIS"],
            "orders": e["EMGUARD_ORDERS"],
        }
        numbers = {"EMGUARD_NATS_PARTITIONS": ("partitions", int), "EMGUARD_NATS_REPLICAS": ("replicas", int),
                   "EMGUARD_NATS_LEASE_S": ("lease_s", float), "EMGUARD_NATS_HEARTBEAT_S": ("heartbeat_s", float),
                   "EMGUARD_NATS_ACK_WAIT_S": ("ack_wait_s", float),
                   "EMGUARD_NATS_HEALTH_PORT": ("health_port", int),
                   "EMGUARD_NATS_REDIS_REPLICAS": ("redis_replicas", int),
                   "EMGUARD_NATS_VIEW_S": ("view_s", float)}
        for var, (name, kind) in numbers.items():
            if e.get(var):
                try:
                    values[name] = kind(e[var])
                except ValueError as exc:
                    raise NatsSetupError(f"{var} must be a number: {exc}") from exc
        for var, name in (("EMGUARD_NATS_WORKER_ID", "worker_id"), ("EMGUARD_NATS_NAMESPACE", "namespace"),
                          ("EMGUARD_TOPIC_PREFIX", "prefix"), ("EMGUARD_CONFIG", "config")):
            if e.get(var):
                values[name] = e[var]
        if e.get("EMGUARD_NATS_USERNAME"):
            values["username"] = e["EMGUARD_NATS_USERNAME"]
        if e.get("EMGUARD_NATS_PASSWORD_FILE"):
            try:
                values["password"] = Path(e["EMGUARD_NATS_PASSWORD_FILE"]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise NatsSetupError(f"EMGUARD_NATS_PASSWORD_FILE: {exc}") from exc
        elif e.get("EMGUARD_NATS_PASSWORD"):
            values["password"] = e["EMGUARD_NATS_PASSWORD"]
        for var, name in (("EMGUARD_NATS_INTAKE", "intake"), ("EMGUARD_NATS_EVALUATE", "evaluate")):
            if e.get(var, "1").lower() in ("0", "false", "no", "off"):
                values[name] = False
        settings = cls(**values)  # type: ignore[arg-type]
        if not (settings.intake or settings.evaluate):
            raise NatsSetupError("EMGUARD_NATS_INTAKE=0 with EMGUARD_NATS_EVALUATE=0 leaves the process nothing to do")
        if settings.partitions < 1 or settings.lease_s <= settings.heartbeat_s:
            raise NatsSetupError("EMGUARD_NATS_PARTITIONS must be >= 1 and the lease longer than a heartbeat")
        if settings.view_s <= 0:
            raise NatsSetupError("EMGUARD_NATS_VIEW_S must be > 0")
        return settings


_TO_SUBJECT = str.maketrans({"/": ".", ".": "//"})


def topic_to_subject(topic: str) -> str:
    """NATS's MQTT mapping: ``/`` becomes ``.`` and a ``.`` inside a level becomes ``//``."""
    return topic.translate(_TO_SUBJECT)


def subject_to_topic(subject: str) -> str:
    """Inverse of ``topic_to_subject``."""
    return subject.replace("//", "\x00").replace(".", "/").replace("\x00", ".")


def partition_of(case: str, partitions: int) -> int:
    """The partition of a case key: crc32, the same in every process and release."""
    return zlib.crc32(case.encode()) % partitions


def partition_subject(n: int) -> str:
    return f"{PART_SUBJECT}.{n}"


def partition_consumer(n: int) -> str:
    return f"part-{n}"


def lease_key(n: int) -> str:
    return f"p{n}"


async def connect(settings: NatsSettings, name: str) -> NATS:
    """A connection that keeps reconnecting to any node of the cluster."""
    return await nats.connect(
        servers=list(settings.servers), name=name, max_reconnect_attempts=-1,
        reconnect_time_wait=0.25, connect_timeout=2, allow_reconnect=True,
        user=settings.username, password=settings.password,
    )


async def connect_near(settings: NatsSettings, url: str, name: str) -> NATS:
    """A connection to ``url`` first (the others only once it is gone): with one per node the
    intake's queue group keeps members while a dead node's connection reconnects."""
    others = [u for u in settings.servers if u != url]
    return await nats.connect(
        servers=[url, *others], name=name, max_reconnect_attempts=-1, dont_randomize=True,
        reconnect_time_wait=0.25, connect_timeout=2, allow_reconnect=True,
        user=settings.username, password=settings.password,
    )


def device_subjects(prefix: str) -> list[str]:
    """What devices and the centre publish: EM_DEV's subjects and the intake's core ones."""
    return [f"{prefix}.dev.>", "owntracks.>", f"{prefix}.ack"]


async def follow_until(stop: asyncio.Event, follow: Callable[[asyncio.Event], Awaitable[None]], what: str,
                       retry_s: float = 1.0) -> None:
    """Run ``follow(stop)`` until ``stop``, starting it again ``retry_s`` after it fails: a read
    model fed from the cluster (a stream, a bucket) must outlast a moment without a JetStream
    leader, and its failure is never a reason to stop evaluating."""
    while not stop.is_set():
        try:
            await follow(stop)
        except Exception as exc:
            log.warning("%s failed (%r); restarting it", what, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)


async def ensure_setup(js: JetStreamContext, settings: NatsSettings, *, within_s: float = 30.0) -> None:
    """Create (or keep) the streams, the consumers and the KV buckets; idempotent.

    Retried while the cluster has no JetStream meta leader yet (just started, or a node lost).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while True:
        try:
            await _setup(js, settings)
            return
        except (ServiceUnavailableError, TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            if loop.time() > end:
                raise NatsSetupError(f"JetStream not available within {within_s} s: {exc!r}") from exc
            await asyncio.sleep(0.25)


async def _setup(js: JetStreamContext, s: NatsSettings) -> None:
    p = s.prefix
    streams = [
        StreamConfig(name=DEV_STREAM, subjects=device_subjects(p),
                     num_replicas=s.replicas, duplicate_window=DEDUP_WINDOW_S),
        StreamConfig(name=PART_STREAM, subjects=[f"{PART_SUBJECT}.>"], num_replicas=s.replicas,
                     duplicate_window=DEDUP_WINDOW_S),
        StreamConfig(name=OUT_STREAM, subjects=[f"{p}.alerts.>", f"{p}.cmd.>", f"{p}.deadletter"],
                     num_replicas=s.replicas, duplicate_window=DEDUP_WINDOW_S, max_age=7 * 86400),
    ]
    for config in streams:
        try:
            info = await js.stream_info(str(config.name))
        except NotFoundError:
            await js.add_stream(config)
            continue
        if sorted(info.config.subjects or []) != sorted(config.subjects or []):
            await js.update_stream(config)  # e.g. em.ack added to EM_DEV by a newer release
    consumers = [(DEV_STREAM, INTAKE_CONSUMER, None)] + [
        (PART_STREAM, partition_consumer(n), partition_subject(n)) for n in range(s.partitions)
    ]
    for stream, durable, subject in consumers:
        try:
            await js.consumer_info(stream, durable)
        except NotFoundError:
            try:
                await js.add_consumer(stream, ConsumerConfig(
                    durable_name=durable, filter_subject=subject, ack_wait=s.ack_wait_s,
                    max_deliver=-1, max_ack_pending=4096, num_replicas=s.replicas,
                ))
            except BadRequestError:  # created meanwhile by another worker
                await js.consumer_info(stream, durable)
    await leases(js, s)
    await workers(js, s)
    await device_views(js, s)


async def leases(js: JetStreamContext, s: NatsSettings) -> KeyValue:
    """The partitions' leases: a key lapses ``lease_s`` after its last write (bucket TTL)."""
    return await _bucket(js, LEASES, s.lease_s, s.replicas)


async def workers(js: JetStreamContext, s: NatsSettings) -> KeyValue:
    """Heartbeats of the live workers: a key lapses three heartbeats after its last write."""
    return await _bucket(js, WORKERS, 3 * s.heartbeat_s, s.replicas)


async def device_views(js: JetStreamContext, s: NatsSettings) -> KeyValue:
    """The owners' device-health snapshots, a key per partition.  No TTL: a partition's last
    snapshot stays until its next owner overwrites it (readers see its age as ``as_of``)."""
    return await _bucket(js, VIEWS, 0.0, s.replicas)


async def _bucket(js: JetStreamContext, name: str, ttl: float, replicas: int) -> KeyValue:
    try:
        return await js.key_value(name)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return await js.create_key_value(bucket=name, ttl=ttl, history=1, replicas=replicas)
