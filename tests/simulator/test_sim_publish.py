"""Publishing a trace onto a real broker: every message arrives, in order, at the asked pace."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from devices.timeutil import format_time
from engine.runtime.broker import EmbeddedBroker, free_port, mosquitto_binary
from simulator.errors import SimulatorError
from simulator.generate import simulate
from simulator.publish import BrokerAddress, parse_broker_url, publish_trace
from simulator.suite import SCENARIO_DIR


@pytest.fixture
async def mosquitto() -> AsyncIterator[int]:
    """A mosquitto of our own (config file: anonymous, 127.0.0.1, free port); a missing binary fails."""
    if mosquitto_binary() is None:
        pytest.fail(
            "mosquitto is not installed (apt-get install mosquitto): the publish test needs a real broker"
        )
    async with EmbeddedBroker(prefer="mosquitto") as info:
        assert info.protocol == "5"
        yield parse_broker_url(info.url).port


async def receive_all(
    port: int, expected: int, publish, protocol=aiomqtt.ProtocolVersion.V5
) -> list[tuple[str, object]]:
    """Subscribe to em/#, run ``publish()``, return (topic, payload) of every message received."""
    got: list[tuple[str, object]] = []
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=protocol, identifier="sim-test-sub"
    ) as sub:
        await sub.subscribe("em/#", qos=1)

        async def collect() -> None:
            async for m in sub.messages:
                got.append((m.topic.value, json.loads(m.payload)))
                if len(got) >= expected:
                    return

        receiver = asyncio.create_task(collect())
        await publish()
        await asyncio.wait_for(receiver, timeout=20)
    return got


@pytest.mark.integration
async def test_every_message_of_a_trace_reaches_a_subscriber_in_order(mosquitto, tmp_path):
    """A trace with bursts, duplicates and reordering is received complete, per topic in trace order."""
    trace = tmp_path / "t.jsonl"
    simulate(SCENARIO_DIR / "late_burst.json", trace, tmp_path / "truth.jsonl")
    sent = [(x["topic"], x["payload"]) for x in map(json.loads, trace.read_text().splitlines())]
    progress = io.StringIO()
    stats = []

    async def go() -> None:
        stats.append(
            await publish_trace(trace, f"mqtt://127.0.0.1:{mosquitto}", speed=0, stream=progress)
        )

    got = await receive_all(mosquitto, len(sent), go)
    assert stats[0].messages == len(sent) and stats[0].protocol == "5"
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, sent))
    by_topic_sent, by_topic_got = defaultdict(list), defaultdict(list)
    for t, p in sent:
        by_topic_sent[t].append(p)
    for t, p in got:
        by_topic_got[t].append(p)
    assert by_topic_got == by_topic_sent
    assert f"published {len(sent)}/{len(sent)}" in progress.getvalue()


@pytest.mark.integration
async def test_speed_scales_the_arrival_gaps(mosquitto, tmp_path):
    """Arrivals 0, 30 and 60 s apart played at speed 60 take about one second."""
    trace = tmp_path / "t.jsonl"
    t0 = 1_795_430_000.0
    lines = [
        {
            "arrival": format_time(t0 + dt),
            "topic": "em/dev/AM-1/fix",
            "payload": {"v": 1, "device": "AM-1", "seq": i},
        }
        for i, dt in enumerate((0, 30, 60))
    ]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    started = time.monotonic()

    async def go() -> None:
        await publish_trace(trace, f"mqtt://127.0.0.1:{mosquitto}", speed=60, progress=False)

    got = await receive_all(mosquitto, 3, go)
    elapsed = time.monotonic() - started
    assert [p["seq"] for _, p in got] == [0, 1, 2]
    assert 0.95 <= elapsed < 5.0


@pytest.mark.integration
# amqtt leaks its side of the socket of a client it refused (the v5 attempt); the leak is in the broker
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_falls_back_to_mqtt_311_when_the_broker_refuses_v5(tmp_path):
    """amqtt speaks 3.1.1 only: the publisher retries with 3.1.1 and delivers."""
    trace = tmp_path / "t.jsonl"
    simulate(SCENARIO_DIR / "victim_device_home.json", trace, tmp_path / "truth.jsonl")
    n = len(trace.read_text().splitlines())
    async with EmbeddedBroker(prefer="amqtt") as info:
        port = parse_broker_url(info.url).port
        stats = []

        async def go() -> None:
            stats.append(await publish_trace(trace, info.url, speed=0, progress=False))

        got = await receive_all(port, n, go, protocol=aiomqtt.ProtocolVersion.V311)
    assert stats[0].protocol == "3.1.1"
    assert len(got) == n


async def test_unreachable_broker_is_a_clear_error(tmp_path):
    """Nobody listening: a SimulatorError naming host and port, after trying both protocols."""
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        json.dumps({"arrival": "2026-11-23T10:00:00Z", "topic": "em/dev/A/fix", "payload": {}})
        + "\n"
    )
    port = free_port()
    with pytest.raises(SimulatorError, match=rf"127.0.0.1:{port}.*MQTT 5.*MQTT 3.1.1"):
        await publish_trace(trace, f"mqtt://127.0.0.1:{port}", speed=0, progress=False)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker:1884", BrokerAddress("broker", 1884)),
        ("mqtt://broker", BrokerAddress("broker", 1883)),
        ("mqtts://u:p%40ss@broker", BrokerAddress("broker", 8883, "u", "p@ss", True)),
        ("127.0.0.1:2000", BrokerAddress("127.0.0.1", 2000)),
    ],
)
def test_broker_urls(url, expected):
    """mqtt:// and mqtts:// URLs with optional credentials and port; bare host:port means mqtt."""
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "mqtt://h:notaport"])
def test_bad_broker_urls(url):
    """Wrong scheme, no host or a bad port are refused."""
    with pytest.raises(SimulatorError):
        parse_broker_url(url)
