"""End-to-end ingest benchmark (issue 10): raw MQTT ceiling vs the full engine, latency, scale-out.

Not a test: a seeded script that starts its own mosquitto (and redis-server) on free
127.0.0.1 ports, publishes one message stream from a SEPARATE process (QoS 1, 100 in
flight; a plain-socket flood publisher, ``benchmarks/flood_publisher.py``, or paho with
``--publisher paho``), and measures, in one run:

1. ``raw``: an aiomqtt subscriber that only counts QoS 1 messages (the engine's filters);
2. ``engine-memory``: the full ``engine.runtime.service.Service`` in this process (decode,
   validate, dedup, zones, proximity, health, alerts, outbox) with in-memory state;
3. ``engine-redis``: the same with ``RedisStore`` (one atomic commit per micro-batch,
   manual QoS 1 acks after the commit);
4. ``latency``: a paced pass at 80 % of the measured raw rate, fix-to-alert latency
   seen by a centre subscriber in a third process (the fix's device time ``t`` is
   its publish time, the alert carries it as ``device_time``); ``latency-engine80``
   the same at 80 % of the engine's own in-memory rate (no queueing);
5. ``serve-1`` / ``serve-2``: one and two ``emguard serve`` worker processes on an
   MQTT v5 shared subscription, each case owned by one worker (messages forwarded to
   it); throughput only.

Rates are messages per second from the publisher's first publish to the consumer's
last processed message.  This box has 2 cores: the publisher, mosquitto and the
consumer share them, so every number here includes that competition (CPU seconds
per process are printed, and ``msg/CPU s``: messages per CPU second of the process
that took them, what it could take on a core of its own).  Usage::

    .venv/bin/python benchmarks/ingest.py            # 10,000 subjects, 120,000 messages
    .venv/bin/python benchmarks/ingest.py --quick    # 2,000 subjects, 20,000 messages
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devices.timeutil import format_time, parse_time  # noqa: E402
from engine.core.testing import ORIGIN  # noqa: E402
from engine.runtime.broker import free_port, mosquitto_binary, wait_for_port  # noqa: E402
from engine.tools.native import build_name  # noqa: E402
from geo.projection import Projector  # noqa: E402

LEVEL_ORDER = ("info", "warning", "alarm", "critical")
TOPICS = ["em/dev/+/fix", "em/dev/+/event", "owntracks/+/+"]
MALFORMED_FRACTION = 0.01
RULE_KINDS = {"exclusion", "inclusion", "proximity"}


# --- scenario (pure and seeded: the publisher process rebuilds the same one) -----------------
@dataclass(slots=True)
class Scenario:
    """Orders for ``subjects`` subject/victim pairs and each device's straight-line motion in metres."""

    doc: dict[str, Any]
    devices: list[str]
    start: np.ndarray  # (n_devices, 2) metres RD New
    step: np.ndarray  # (n_devices, 2) metres per fix
    kinds: dict[str, int] = field(default_factory=dict)


def curfew_around(now: float, night: bool) -> tuple[str, str]:
    """An 8-hour curfew window (Amsterdam time) placed so that the run is inside it or not.

    The stream's fixes carry the wall-clock time, so a fixed 22:00-06:00 curfew made the
    workload depend on the hour the benchmark ran (at night most wanderers are outside their
    curfew zone: four times the alerts).  Day: the curfew starts 2 h from now; night: it
    started 1 h ago.
    """
    local = datetime.fromtimestamp(now, ZoneInfo("Europe/Amsterdam"))
    start = local + timedelta(hours=-1 if night else 2)
    return start.strftime("%H:%M"), (start + timedelta(hours=8)).strftime("%H:%M")


def build_scenario(
    subjects: int, seed: int, curfew: tuple[str, str] = ("22:00", "06:00")
) -> Scenario:
    """Rotterdam-area subjects, each with a victim, a ban on her home (circle), a banned square
    and a curfew at his home (``curfew``: from, to, Amsterdam time); 80 % wander near home,
    10 % drive through the square, 10 % approach the victim (mixed inside/outside, warnings
    and alarms)."""
    rng = np.random.default_rng(seed)
    proj = Projector("EPSG:28992")
    ox, oy = ORIGIN
    home = np.column_stack(
        [ox + rng.uniform(-12_000, 12_000, subjects), oy + rng.uniform(-12_000, 12_000, subjects)]
    )
    ang_v = rng.uniform(0, 2 * math.pi, subjects)
    victim = (
        home
        + np.column_stack([np.cos(ang_v), np.sin(ang_v)])
        * rng.uniform(6_000, 9_000, subjects)[:, None]
    )
    ang_b = rng.uniform(0, 2 * math.pi, subjects)
    ban = home + np.column_stack([np.cos(ang_b), np.sin(ang_b)]) * 2_500.0
    kind = rng.choice(
        3, size=subjects, p=[0.8, 0.1, 0.1]
    )  # 0 wander, 1 through ban square, 2 approach
    d = rng.uniform(0, 2 * math.pi, subjects)
    unit = np.column_stack([np.cos(d), np.sin(d)])
    s_start = np.where(
        (kind == 0)[:, None],
        home + rng.uniform(-800, 800, (subjects, 2)),
        np.where((kind == 1)[:, None], ban + unit * 450.0, victim + unit * 1_250.0),
    )
    s_step = np.where(
        (kind == 0)[:, None],
        rng.normal(0, 8.0, (subjects, 2)),
        np.where((kind == 1)[:, None], -unit * 40.0, -unit * 60.0),
    )
    v_start = victim + rng.uniform(-200, 200, (subjects, 2))
    v_step = rng.normal(0, 3.0, (subjects, 2))

    def ll(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = proj.inverse(pts[:, 0], pts[:, 1])
        return np.asarray(lon), np.asarray(lat)

    vlon, vlat = ll(victim)
    hlon, hlat = ll(home)
    corners = [
        ll(ban + np.array([sx, sy]) * 300.0) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    now = time.time()
    subj, prot, orders = [], [], []
    for i in range(subjects):
        ring = [[round(float(c[0][i]), 7), round(float(c[1][i]), 7)] for c in corners]
        subj.append(
            {
                "id": f"S-{i}",
                "devices": [f"AM-{i}"],
                "residence": {"lat": round(float(hlat[i]), 7), "lon": round(float(hlon[i]), 7)},
            }
        )
        prot.append({"id": f"P-{i}", "devices": [f"VD-{i}"]})
        orders.append(
            {
                "id": f"O-{i}",
                "subject": f"S-{i}",
                "legal_basis": "vrijheidsbeperkende_maatregel",
                "valid_from": format_time(now - 86_400),
                "valid_until": format_time(now + 60 * 86_400),
                "exclusion_zones": [
                    {
                        "id": "Z-victim-home",
                        "circle": {
                            "lat": round(float(vlat[i]), 7),
                            "lon": round(float(vlon[i]), 7),
                            "radius_m": 1000,
                        },
                    },
                    {"id": "Z-ban", "polygon": [*ring, ring[0]]},
                ],
                "inclusion_zones": [
                    {
                        "id": "Z-curfew",
                        "circle": {
                            "lat": round(float(hlat[i]), 7),
                            "lon": round(float(hlon[i]), 7),
                            "radius_m": 150,
                        },
                        "schedule": [
                            {
                                "days": "mon-sun",
                                "from": curfew[0],
                                "to": curfew[1],
                                "tz": "Europe/Amsterdam",
                            }
                        ],
                    }
                ],
                "proximity": [{"protected_person": f"P-{i}", "alert_m": 1000, "warn_m": 3000}],
            }
        )
    doc = {"v": 1, "subjects": subj, "protected_persons": prot, "orders": orders}
    devices = [f"AM-{i}" for i in range(subjects)] + [f"VD-{i}" for i in range(subjects)]
    kinds = {
        "wander": int((kind == 0).sum()),
        "through_ban": int((kind == 1).sum()),
        "approach": int((kind == 2).sum()),
    }
    return Scenario(doc, devices, np.vstack([s_start, v_start]), np.vstack([s_step, v_step]), kinds)


Template = tuple[str, bytes, bytes]  # topic, payload before the time, payload after it


def fix_template(device: str, seq: int, lat: float, lon: float) -> tuple[str, str]:
    """A valid native fix around its ``"t"`` value: (before the quoted time, after it)."""
    return (
        f'{{"v":1,"device":"{device}","seq":{seq},"t":',
        f',"lat":{lat:.7f},"lon":{lon:.7f},"acc":8.0,"sats":9,"batt":80}}',
    )


def build_stream(subjects: int, messages: int, seed: int) -> list[Template]:
    """Round-robin rounds in a shuffled device order; 1 % of messages malformed in four ways."""
    sc = build_scenario(subjects, seed)
    rng = np.random.default_rng(seed + 1)
    proj = Projector("EPSG:28992")
    n = len(sc.devices)
    rounds = math.ceil(messages / n)
    order = np.concatenate([rng.permutation(n) for _ in range(rounds)])[:messages]
    fix_no = np.zeros(n, dtype=np.int64)
    k = np.empty(messages, dtype=np.int64)
    for j, dev in enumerate(order):  # the j-th message is fix number k[j] of its device
        k[j] = fix_no[dev]
        fix_no[dev] += 1
    pts = sc.start[order] + sc.step[order] * k[:, None] + rng.normal(0, 4.0, (messages, 2))
    lon, lat = proj.inverse(pts[:, 0], pts[:, 1])
    lon, lat = np.asarray(lon).tolist(), np.asarray(lat).tolist()
    bad = rng.random(messages) < MALFORMED_FRACTION
    out: list[Template] = []
    n_bad = 0
    for j, dev_i in enumerate(order.tolist()):
        dev = sc.devices[dev_i]
        topic = f"em/dev/{dev}/fix"
        head, tail = fix_template(dev, int(k[j]) + 1, lat[j], lon[j])
        if bad[j]:
            n_bad += 1
            variant = n_bad % 4
            if variant == 0:
                tail = tail[: len(tail) // 2]  # truncated JSON
            elif variant == 1:
                tail = f',"lon":{lon[j]:.7f},"acc":8.0}}'  # lat missing
            elif variant == 2:
                tail = f',"lat":{lat[j]:.7f},"lon":{lon[j]:.7f},"acc":0}}'  # acc must be > 0
            else:
                head = head.replace(dev, "XX-0")  # device does not match the topic
        out.append((topic, head.encode(), tail.encode()))
    return out


# --- the publisher and the centre observer (separate processes) --------------------------------
def _paho_client(client_id: str, inflight: int = 100) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    return client


class _Stamp:
    """The fix time ``"YYYY-MM-DDTHH:MM:SS.mmmZ"`` (quoted) of a publish at wall time ``now``."""

    def __init__(self) -> None:
        self.sec, self.prefix = -1, ""

    def __call__(self, now: float) -> bytes:
        sec = int(now)
        if sec != self.sec:
            self.sec, self.prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f'"{self.prefix}.{int((now - sec) * 1000):03d}Z"'.encode()


def publisher_main(
    port: int, subjects: int, messages: int, seed: int, rate: float, go: Any, results: Any,
    tag: str, kind: str = "flood",
) -> None:
    """Builds the stream, connects, waits for ``go``, publishes (paced when ``rate`` > 0).

    ``kind`` "flood": benchmarks/flood_publisher.py (a few us per message); "paho": paho's
    client (40-70 us per message here: with 2 cores it set the pace of every engine pass
    before 2026-12-03).  Both QoS 1 with 100 in flight.
    """
    stream = build_stream(subjects, messages, seed)
    if kind == "flood":
        from flood_publisher import FloodPublisher

        flood = FloodPublisher("127.0.0.1", port, f"bench-pub-{tag}-{os.getpid()}", inflight=100)
        results.put(("ready", tag))
        go.wait()
        t0, t1 = flood.publish(stream, _Stamp(), rate)
        flood.close()
        results.put(("published", tag, t0, t1, len(stream)))
        return
    client = _paho_client(f"bench-pub-{tag}-{os.getpid()}", inflight=100)
    client.connect("127.0.0.1", port, keepalive=60)
    results.put(("ready", tag))
    while not go.wait(0.05):
        client.loop(0)  # keep the connection alive; no network thread (it halves the rate here)
    t0 = time.time()
    stamp = _Stamp()
    info = None
    for j, (topic, head, tail) in enumerate(stream):
        now = time.time()
        if j % 50 == 0:
            if rate > 0:
                while (due := t0 + j / rate) > now:
                    client.loop(min(due - now, 0.01))
                    now = time.time()
            client.loop(0)
        info = client.publish(topic, head + stamp(now) + tail, qos=1)
    while info is not None and not info.is_published():
        client.loop(0.01)
    t1 = time.time()
    client.disconnect()
    results.put(("published", tag, t0, t1, len(stream)))


def observer_main(port: int, stop: Any, results: Any) -> None:
    """Records (receive time, alert) for every centre message until ``stop``."""
    seen: list[tuple[float, str, str, str | None, str, str]] = []

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        doc = json.loads(msg.payload)
        seen.append((
            time.time(), doc.get("kind", ""), doc.get("level", ""), doc.get("device_time"),
            doc.get("alert_id", ""), doc.get("state", ""),
        ))

    client = _paho_client(f"bench-centre-{os.getpid()}")
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("em/alerts/centre", qos=1)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    results.put(("ready", "observer"))
    stop.wait()
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()
    results.put(("alerts", seen))


# --- measurement helpers -----------------------------------------------------------------------
@dataclass(slots=True)
class Pass:
    """One measured pass."""

    name: str
    messages: int
    seconds: float
    publish_rate: float
    cpu: dict[str, float]
    rss_mb: float
    note: str = ""
    latency: tuple[float, float, int] | None = None  # p50 ms, p99 ms, samples

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_cpu_s(self) -> float:
        """Messages per CPU second of the process(es) that took them: the consumer, or the
        serve workers together.  What one process of this machine could take on a core of
        its own, apart from the publisher and broker it shares the 2 cores with here."""
        workers = [v for k, v in self.cpu.items() if k.startswith("worker")]
        cpu = sum(workers) if workers else self.cpu.get("consumer", 0.0)
        return self.messages / cpu if cpu > 0 else 0.0


class GcPauses:
    """A ``gc.callbacks`` entry: how often the cyclic collector ran a full pass, and for how long.

    A full pass walks every tracked object the heap freeze did not cover (tracks, alerts,
    episodes made during the run) and stops the event loop meanwhile: a latency tail.
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.full: list[float] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.full.append(time.perf_counter() - self.started)

    def __str__(self) -> str:
        if not self.full:
            return "gc_full=0"
        return f"gc_full={len(self.full)} max {1000 * max(self.full):.0f} ms total {1000 * sum(self.full):.0f} ms"


class CpuMeter:
    """CPU seconds of named processes between ``start`` and ``stop``."""

    def __init__(self, procs: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in procs.items()}
        self.base: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                out[name] = t.user + t.system
        return out

    def start(self) -> None:
        self.base = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        return {k: now[k] - self.base.get(k, 0.0) for k in now}


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child process writing to ``log`` (plain function: the async passes only call it)."""
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


class Bench:
    """Owns the broker, the optional redis-server and the helper processes of one run."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.broker: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.redis_port = free_port()

    async def start_broker(self) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
        conf = self.tmp / "mosquitto.conf"
        # as deploy/broker/mosquitto.conf: 100 in flight per client, a deep queue for slow
        # consumers, no Nagle delay (without it the broker's PUBACKs to the engine's publishing
        # connection waited for delayed ACKs: alerts p50 46-90 ms instead of 5 ms at 80 % of raw)
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 1000000\nmax_inflight_messages 100\nset_tcp_nodelay true\n"
            f"log_type error\nlog_type warning\nlog_dest file {self.tmp / 'mosquitto.log'}\n"
        )
        self.broker = _spawn([binary, "-c", str(conf)], self.tmp / "mosquitto.out")
        await wait_for_port("127.0.0.1", self.port)

    async def start_redis(self) -> None:
        binary = shutil.which("redis-server") or shutil.which(
            "redis-server", path="/usr/sbin:/usr/bin"
        )
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        data = self.tmp / "redis"
        data.mkdir(exist_ok=True)
        # as deploy/compose.yaml: AOF with fsync every second
        self.redis = _spawn(
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ],
            self.tmp / "redis.out",
        )
        await wait_for_port("127.0.0.1", self.redis_port)

    def stop(self) -> None:
        for proc in (self.broker, self.redis):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)

    async def _get(self, kind: str) -> tuple[Any, ...]:
        while True:
            item = await asyncio.to_thread(self.results.get, True, 600)
            if item[0] == kind:
                return item

    async def publisher(self, rate: float, tag: str) -> tuple[Any, Any]:
        """Start the publisher process and wait until its stream is built and it is connected."""
        go = self.ctx.Event()
        proc = self.ctx.Process(
            target=publisher_main,
            args=(
                self.port,
                self.args.subjects,
                self.args.messages,
                self.args.seed,
                rate,
                go,
                self.results,
                tag,
                self.args.publisher,
            ),
        )
        proc.start()
        await self._get("ready")
        return proc, go

    async def measure(
        self,
        name: str,
        rate: float,
        done: Any,
        extra_procs: dict[str, int] | None = None,
        observe: bool = False,
    ) -> Pass:
        """Publish the stream once; ``done()`` says when the consumer has processed it all."""
        proc, go = await self.publisher(rate, name)
        observer, obs_stop = None, None
        if observe:
            obs_stop = self.ctx.Event()
            observer = self.ctx.Process(
                target=observer_main, args=(self.port, obs_stop, self.results)
            )
            observer.start()
            await self._get("ready")
            await asyncio.sleep(0.3)
        assert self.broker is not None
        procs = {
            "consumer": os.getpid(),
            "mosquitto": self.broker.pid,
            "publisher": proc.pid or 0,
            **(extra_procs or {}),
        }
        if self.redis is not None:
            procs["redis"] = self.redis.pid
        meter = CpuMeter(procs)
        me = psutil.Process()
        peak = me.memory_info().rss
        meter.start()
        go.set()
        t_start = time.time()
        limit = t_start + self.args.timeout
        while not await done() and time.time() < limit:
            peak = max(peak, me.memory_info().rss)
            await asyncio.sleep(0.01)
        t_end = time.time()
        cpu = meter.stop()
        _, _, t0, t1, n = await self._get("published")
        await asyncio.to_thread(proc.join, 30)
        note = "" if t_end < limit else f"TIMEOUT after {self.args.timeout} s"
        latency = None
        if observer is not None and obs_stop is not None:
            await asyncio.sleep(1.0)
            obs_stop.set()
            _, seen = await self._get("alerts")
            await asyncio.to_thread(observer.join, 30)
            # fix-to-alert: only changes a fix caused, i.e. an alert raised or its level raised
            # (their device_time is that fix's); escalations past a deadline and resolutions
            # keep an older device_time and would count the episode's length as latency
            top: dict[str, int] = {}
            lat_ms = []
            for r, k, lvl, dt, aid, state in seen:
                rank = LEVEL_ORDER.index(lvl) if lvl in LEVEL_ORDER else -1
                if state in ("resolved", "closed") or rank <= top.get(aid, -1):
                    continue
                top[aid] = rank
                if k in RULE_KINDS and dt and parse_time(dt) >= t0 - 1:
                    lat_ms.append((r - parse_time(dt)) * 1000)
            lat_ms.sort()
            if lat_ms:
                latency = (
                    float(np.percentile(lat_ms, 50)),
                    float(np.percentile(lat_ms, 99)),
                    len(lat_ms),
                )
        return Pass(name, n, t_end - t0, n / (t1 - t0), cpu, peak / 2**20, note, latency)


# --- the passes --------------------------------------------------------------------------------
async def raw_pass(bench: Bench) -> Pass:
    import aiomqtt

    count = 0
    async with aiomqtt.Client(
        "127.0.0.1",
        bench.port,
        identifier=f"bench-raw-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        for topic in TOPICS:
            await client.subscribe(topic, qos=1)

        async def reader() -> None:
            nonlocal count
            async for _ in client.messages:
                count += 1

        task = asyncio.create_task(reader())

        async def done() -> bool:
            return count >= bench.args.messages

        result = await bench.measure("raw", 0.0, done)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return result


def build_engine(doc: dict[str, Any], reorder_quiet_s: float | None = None) -> Any:
    from dataclasses import replace

    from engine.core.config import EngineConfig, RuleConfig
    from engine.core.orders_load import load_orders
    from engine.core.pipeline import Engine

    rules = (
        RuleConfig()
        if reorder_quiet_s is None
        else replace(RuleConfig(), reorder_quiet_s=reorder_quiet_s)
    )
    return Engine(load_orders(doc), EngineConfig(rules=rules))


def enrol(engine: Any, sc: Scenario) -> None:
    """Every device's fix seq 0, a minute ago at its start point, straight into the engine.

    In service the engine knows its devices: a device's first fix ever (or after a gap in its
    sequence) waits the reorder hold, every later live fix in sequence does not.  The stream
    has only 5-6 fixes per device, so without this a fifth of it would be first fixes, which
    are also cheaper (a partner without a track is not evaluated): the passes would measure
    device enrolment rather than steady state.
    """
    lon, lat = Projector("EPSG:28992").inverse(sc.start[:, 0], sc.start[:, 1])
    then = time.time() - 60.0
    stamp = format_time(then)
    for device, x, y in zip(sc.devices, np.asarray(lon).tolist(), np.asarray(lat).tolist(), strict=True):
        head, tail = fix_template(device, 0, y, x)
        engine.handle(f"em/dev/{device}/fix", f'{head}"{stamp}"{tail}'.encode(), then)
    engine.flush(then + 1.0)


async def engine_pass(
    bench: Bench,
    doc: dict[str, Any],
    name: str,
    *,
    redis: bool = False,
    rate: float = 0.0,
    observe: bool = False,
    reorder_quiet_s: float | None = None,
    enrolled: Scenario | None = None,
) -> Pass:
    from engine.core.config import ServiceConfig
    from engine.runtime.heap import FreezeAfterFullPass, freeze_loaded_state
    from engine.runtime.service import Service
    from engine.runtime.store_redis import RedisStore

    engine = build_engine(doc, reorder_quiet_s)
    if enrolled is not None:
        enrol(engine, enrolled)
    before = engine.stats.received  # the enrolment is not part of the measured stream
    # as ``emguard serve`` does after loading (full GC passes over the orders cost ~15 %), and
    # its policy for what traffic adds (engine.runtime.heap); the raw pass keeps Python's defaults
    freeze_loaded_state()
    policy = FreezeAfterFullPass().install()
    store = (
        RedisStore(f"redis://127.0.0.1:{bench.redis_port}/0", namespace=f"bench-{name}")
        if redis
        else None
    )
    cfg = ServiceConfig(
        broker=f"mqtt://127.0.0.1:{bench.port}", client_id=f"bench-{name}-{os.getpid()}"
    )
    # no persistent session: a finished pass must not leave a session queueing the next pass's stream
    service = Service(engine, cfg, store=store, persistent_session=False)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    while not service.connected:  # noqa: ASYNC110 - a flag of the service, polled
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # subscriptions in place

    async def done() -> bool:
        # everything received, evaluated (not waiting in a reorder buffer) and, with a store,
        # committed: the work of the whole stream is inside the measured time
        return (
            engine.stats.received - before >= bench.args.messages
            and service.inbox.empty()
            and not any(t.pending for t in engine.tracks.values())
            and not service._held_acks
        )

    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        result = await bench.measure(name, rate, done, observe=observe)
    finally:
        gc.callbacks.remove(pauses)
    stats = engine.stats
    # what the engine had yet to publish when the stream was done (alerts, warnings, commands)
    published, outbox_left = service.published, len(service.outbox)
    if result.note.startswith("TIMEOUT"):
        # only what the engine actually received counts: the rate of a pass that did not finish
        result.messages = min(result.messages, stats.received - before)
    result.note = (
        result.note + f" fixes={stats.fixes} rejected={sum(stats.rejected.values())} "
        f"dup={stats.duplicates} evaluated={stats.evaluated} alerts={len(engine.alerts.alerts)}"
        f" published={published} outbox_left={outbox_left} {pauses}"
    ).strip()
    if store is not None and service.commits:
        result.note += (
            f" commits={service.commits} parts/commit={service.committed_parts / service.commits:.1f}"
            f" state KB/commit={service.committed_bytes / service.commits / 1024:.1f}"
            f" ms/commit={1000 * service.commit_seconds / service.commits:.2f}"
        )
    stop.set()
    await task
    policy.remove()
    gc.unfreeze()  # this pass's engine may go now
    return result


def _metric_sum(text: str, names: tuple[str, ...]) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(names):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def serve_pass(bench: Bench, orders_path: Path, workers: int) -> Pass:
    """``emguard serve`` worker processes on one shared subscription (in-memory state each)."""
    procs, ports = [], []
    for w in range(workers):
        http = free_port()
        env = {
            **os.environ,
            "EMGUARD_BROKER": f"mqtt://127.0.0.1:{bench.port}",
            "EMGUARD_ORDERS": str(orders_path),
            "EMGUARD_HTTP_PORT": str(http),
            "EMGUARD_CLIENT_ID": f"bench-worker-{workers}-{w}",
            "EMGUARD_SHARED_GROUP": f"bench{workers}",
            "EMGUARD_LOG_LEVEL": "WARNING",
        }
        procs.append(
            _spawn(
                [sys.executable, "-m", "engine.tools.cli", "serve"],
                bench.tmp / f"worker-{workers}-{w}.log",
                env,
            )
        )
        ports.append(http)

    def scrape(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    t_boot = time.time()
    for port in ports:
        await wait_for_port("127.0.0.1", port, within_s=300)
    for port in ports:
        while _metric_sum(await asyncio.to_thread(scrape, port), ("emguard_broker_connected",)) < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    boot = time.time() - t_boot
    await asyncio.sleep(0.5)

    last = 0.0

    async def done() -> bool:
        # every message received and every fix evaluated (none held in a reorder buffer: a
        # worker's first fixes of a device wait the hold); scraped at most 10 times a second,
        # a scrape costs the workers CPU too
        nonlocal last
        if time.time() - last < 0.1:
            return False
        last = time.time()
        total = waiting = 0.0
        for port in ports:
            text = await asyncio.to_thread(scrape, port)
            total += _metric_sum(
                text, ("emguard_fixes_received_total", "emguard_fixes_rejected_total")
            )
            waiting += _metric_sum(text, ("emguard_fixes_waiting",))
        return total >= bench.args.messages and waiting == 0

    extra = {f"worker{w}": p.pid for w, p in enumerate(procs)}
    try:
        result = await bench.measure(f"serve-{workers}", 0.0, done, extra_procs=extra)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    result.note = f"worker start-up {boot:.1f} s (orders load + JIT cache)"
    return result


# --- report ------------------------------------------------------------------------------------
def report(
    passes: list[Pass], raw: Pass, args: argparse.Namespace, setup: dict[str, float]
) -> None:
    print(
        f"\nsubjects={args.subjects} devices={2 * args.subjects} zones={3 * args.subjects} "
        f"messages={args.messages} malformed={MALFORMED_FRACTION:.0%} seed={args.seed} cores={os.cpu_count()}"
    )
    print("setup: " + ", ".join(f"{k} {v:.2f} s" for k, v in setup.items()))
    head = (
        f"{'pass':<16}{'msg/s':>9}{'pub msg/s':>11}{'vs raw':>8}{'msg/CPU s':>11}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'RSS MB':>8}  CPU s (per process)"
    )
    print(head)
    print("-" * len(head))
    for p in passes:
        lat = f"{p.latency[0]:>9.0f}{p.latency[1]:>9.0f}" if p.latency else f"{'':>9}{'':>9}"
        cpu = " ".join(f"{k}={v:.1f}" for k, v in p.cpu.items())
        print(
            f"{p.name:<16}{p.rate:>9.0f}{p.publish_rate:>11.0f}{p.rate / raw.rate:>8.2f}"
            f"{p.per_cpu_s:>11.0f}{lat}{p.rss_mb:>8.0f}  {cpu}"
        )
        if p.note:
            print(f"{'':<16}{p.note}")
    print(
        f"peak RSS of this process (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    by = {p.name: p for p in passes}
    print()
    print(f"raw_msgs_per_s={raw.rate:.0f}")
    for name in ("engine-memory", "engine-redis", "serve-1", "serve-2"):
        if name in by:
            print(f"{name.replace('-', '_')}_msgs_per_s={by[name].rate:.0f}")
    print(f"raw_msgs_per_cpu_s={raw.per_cpu_s:.0f}")
    for name in ("engine-memory", "engine-redis", "serve-1"):
        if name in by:
            print(f"{name.replace('-', '_')}_msgs_per_cpu_s={by[name].per_cpu_s:.0f}")
    for name in ("latency", "latency-engine80"):
        if name in by and by[name].latency:
            key = name.replace("-", "_")
            print(f"{key}_p50_ms={by[name].latency[0]:.0f}")
            print(f"{key}_p99_ms={by[name].latency[1]:.0f}")
    if "serve-1" in by and "serve-2" in by:
        print(f"scaling_2_workers={by['serve-2'].rate / by['serve-1'].rate:.2f}")
    if "engine-redis" in by:
        print(f"ratio_redis_vs_raw={by['engine-redis'].rate / raw.rate:.2f}")
    if "engine-memory" in by:
        print(f"ratio_engine_vs_raw={by['engine-memory'].rate / raw.rate:.2f}")


async def main_async(args: argparse.Namespace) -> None:
    print(f"build={build_name()} (engine.tools.native; benchmarks/native_tree.py makes a compiled copy)")
    with tempfile.TemporaryDirectory(prefix="emguard-ingest-") as tmpdir:
        tmp = Path(tmpdir)
        bench = Bench(args, tmp)
        setup: dict[str, float] = {}
        t = time.perf_counter()
        curfew = curfew_around(time.time(), args.night)
        scenario = build_scenario(args.subjects, args.seed, curfew)
        setup["scenario"] = time.perf_counter() - t
        orders_path = tmp / "orders.json"
        orders_path.write_text(json.dumps(scenario.doc))
        t = time.perf_counter()
        warm = build_engine(scenario.doc)  # JIT warm-up and load time, shown apart from throughput
        warm.handle(
            "em/dev/AM-0/fix",
            b'{"v":1,"device":"AM-0","seq":1,"t":"2026-01-01T00:00:00Z",'
            b'"lat":51.92,"lon":4.47,"acc":8}',
            time.time(),
        )
        warm.flush(time.time() + 10)
        setup["orders load + JIT warm-up"] = time.perf_counter() - t
        del warm
        print(f"scenario: {scenario.kinds}, curfew {curfew[0]}-{curfew[1]} Europe/Amsterdam ({'night: inside it' if args.night else 'day: outside it'})", flush=True)
        await bench.start_broker()
        passes: list[Pass] = []
        try:
            raw = await raw_pass(bench)
            passes.append(raw)
            print(f"raw: {raw.rate:.0f} msg/s", flush=True)
            for name, kw in (("engine-memory", {}), ("engine-redis", {"redis": True})):
                if kw and args.no_redis:
                    continue
                if kw:
                    await bench.start_redis()
                # no reorder hold in the throughput passes: the same evaluations, done as the
                # messages come rather than up to 0.5 s after the last one (which would sit
                # outside or at the end of the measured time)
                p = await engine_pass(
                    bench, scenario.doc, name, reorder_quiet_s=0.0, enrolled=scenario,
                    **kw,  # type: ignore[arg-type]
                )
                passes.append(p)
                print(f"{name}: {p.rate:.0f} msg/s  {p.note}", flush=True)
            # the pace (80 % of raw), and 80 % of what the engine itself sustains: the
            # first shows queueing whenever the engine is slower than that, the second the
            # latency of the decisions themselves; both with the default reorder rules
            engine_rate = passes[1].rate
            for name, target, of in (
                ("latency", 0.8 * raw.rate, "raw"),
                ("latency-engine80", 0.8 * engine_rate, "the engine's in-memory rate"),
            ):
                if args.no_latency:
                    break
                p = await engine_pass(
                    bench, scenario.doc, name, rate=target, observe=True, enrolled=scenario
                )
                p.note = f"paced at {target:.0f} msg/s (80 % of {of}); " + p.note
                passes.append(p)
                print(f"{name}: {p.rate:.0f} msg/s latency {p.latency}", flush=True)
            if not args.no_workers:
                for workers in (1, 2):
                    p = await serve_pass(bench, orders_path, workers)
                    passes.append(p)
                    print(f"serve-{workers}: {p.rate:.0f} msg/s", flush=True)
        finally:
            bench.stop()
        report(passes, raw, args, setup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2,000 subjects, 20,000 messages")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give up on one pass after this long"
    )
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--no-workers", action="store_true")
    parser.add_argument("--no-latency", action="store_true", help="skip the two paced latency passes")
    parser.add_argument(
        "--night", action="store_true",
        help="run inside the curfews (most wanderers break theirs: an alert storm); default: outside",
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run this process (raw and engine passes) on uvloop"
    )
    parser.add_argument(
        "--publisher", choices=("flood", "paho"), default="flood",
        help="flood: a plain-socket QoS 1 publisher (benchmarks/flood_publisher.py, the default); "
        "paho: paho's client, as in runs before 2026-12-03 (it set the pace of every engine pass)",
    )
    args = parser.parse_args()
    if args.quick:
        args.subjects, args.messages = 2_000, 20_000
    if args.uvloop:
        import uvloop

        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
