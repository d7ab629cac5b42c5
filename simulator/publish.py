"""``emguard publish``: play a trace onto a real broker, at scaled real time or flat out.

Messages go out in trace (arrival) order with QoS 1; the gap between two
messages is their arrival gap divided by ``speed`` (``speed=0``: no waiting).
Up to ``max_inflight`` publishes await their PUBACK at once; they are handed
to the MQTT client in order, so the broker receives them in order.  The
client asks for MQTT v5 and falls back to 3.1.1 when the broker refuses it
(amqtt, the embedded broker, speaks 3.1.1 only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

import aiomqtt

from simulator.errors import SimulatorError
from simulator.timeshift import shift_payload

PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where to connect, from ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


@dataclass(frozen=True, slots=True)
class PublishStats:
    """What a publish run did."""

    messages: int
    seconds: float
    protocol: str  # "5" or "3.1.1"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL; a bare ``host[:port]`` means ``mqtt://``."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp"):
        raise SimulatorError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise SimulatorError(f"broker URL {url!r}: no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise SimulatorError(f"broker URL {url!r}: bad port") from exc
    return BrokerAddress(
        parts.hostname,
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        tls,
    )


async def publish_trace(
    path: str | Path,
    broker_url: str,
    speed: float = 60.0,
    *,
    qos: int = 1,
    progress: bool = True,
    stream: TextIO | None = None,
    max_inflight: int = 100,
    client_id: str | None = None,
    shift_to_now: bool = False,
    clock: Callable[[], float] = time.time,
) -> PublishStats:
    """Publish every line of a trace to the broker; returns counts, wall time and protocol used.

    ``shift_to_now`` moves every device time by one offset (now minus the trace's first
    arrival, ``simulator.timeshift``) so a live engine sees the trace as it was recorded; it
    needs ``speed`` 1: at any other speed the device clock would drift from the wall clock
    (ahead of it, fixes are refused as from the future; behind it, everything is late).
    """
    from engine.runtime.replay import read_trace  # late: importing the engine costs ~0.8 s

    if speed < 0:
        raise SimulatorError("speed must be >= 0 (0: as fast as possible)")
    if shift_to_now and speed != 1:
        raise SimulatorError(
            "--shift-to-now plays the trace in real time (--speed 1): at another speed device "
            "time drifts from the clock; for a faster run use emguard replay, in device time"
        )
    messages = await asyncio.to_thread(lambda: list(read_trace(path)))
    if shift_to_now and messages:
        offset = clock() - messages[0][0]
        messages = [(a + offset, topic, shift_payload(topic, p, offset)) for a, topic, p in messages]
    addr = parse_broker_url(broker_url)
    out = stream if stream is not None else sys.stderr
    ident = client_id or f"emguard-publish-{os.getpid()}"
    async with contextlib.AsyncExitStack() as stack:
        client, protocol = await _connect(stack, addr, ident, max_inflight)
        window = asyncio.Semaphore(max_inflight)
        pending: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        shown = 0.0
        first = messages[0][0] if messages else 0.0

        def done(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            window.release()
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]

        for i, (arrival, topic, payload) in enumerate(messages):
            if speed > 0:
                delay = started + (arrival - first) / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            if failures:
                window.release()
                break
            task = asyncio.create_task(client.publish(topic, payload, qos=qos))
            pending.add(task)
            task.add_done_callback(done)
            if progress and loop.time() - shown >= PROGRESS_EVERY_S:
                shown = loop.time()
                out.write(f"\rpublished {i + 1}/{len(messages)}")
                out.flush()
        if pending:
            await asyncio.wait(set(pending))
        if failures:
            raise SimulatorError(f"publishing to {broker_url} failed: {failures[0]}") from failures[
                0
            ]
        elapsed = loop.time() - started
    if progress:
        out.write(
            f"\rpublished {len(messages)}/{len(messages)} in {elapsed:.1f} s (MQTT {protocol})\n"
        )
        out.flush()
    return PublishStats(len(messages), elapsed, protocol)


async def _connect(
    stack: contextlib.AsyncExitStack, addr: BrokerAddress, ident: str, max_inflight: int
) -> tuple[aiomqtt.Client, str]:
    """Connect with MQTT v5, else 3.1.1; the client is closed when ``stack`` unwinds.

    The in-flight window is ours: paho may have as many QoS 1 messages in
    flight, and aiomqtt's "pending calls" warning starts above it.
    """
    tls = ssl.create_default_context() if addr.tls else None
    errors = []
    for protocol, name in (
        (aiomqtt.ProtocolVersion.V5, "5"),
        (aiomqtt.ProtocolVersion.V311, "3.1.1"),
    ):
        client = aiomqtt.Client(
            addr.host,
            addr.port,
            username=addr.username,
            password=addr.password,
            identifier=ident,
            protocol=protocol,
            tls_context=tls,
            timeout=10.0,
            max_inflight_messages=max_inflight,
        )
        client.pending_calls_threshold = max_inflight
        try:
            await stack.enter_async_context(client)
        except aiomqtt.MqttError as exc:
            errors.append(f"MQTT {name}: {exc}")
            continue
        return client, name
    raise SimulatorError(f"cannot connect to {addr.host}:{addr.port} ({'; '.join(errors)})")


def publish_blocking(
    path: str | Path, broker_url: str, speed: float = 60.0, **kwargs: object
) -> PublishStats:
    """Synchronous wrapper for the command line."""
    return asyncio.run(publish_trace(path, broker_url, speed, **kwargs))  # type: ignore[arg-type]


__all__ = ["BrokerAddress", "PublishStats", "parse_broker_url", "publish_blocking", "publish_trace"]
