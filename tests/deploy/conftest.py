"""Fixtures for the deployment tests: orders, private broker directories, brokers and MQTT probes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _deploy_helpers import ORDERS_DOC, Broker, Probe

from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders


@pytest.fixture
def book() -> OrderBook:
    """Two offenders, each banned from one victim; victim P-1 also has an OwnTracks phone."""
    return load_orders(ORDERS_DOC)


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    """A private directory the broker user can enter (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="emguard-mosq-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_broker() -> Iterator[Any]:
    """Factory ``start_broker(config, port) -> Broker``; every broker is stopped at teardown."""
    started: list[Broker] = []

    def start(config: Path, port: int) -> Broker:
        broker = Broker(config, port, config.with_name(f"broker-{port}.log"))
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def probes() -> Iterator[Any]:
    """Factory ``probes(port, user, password, **kw) -> connected Probe``; all closed at teardown."""
    made: list[Probe] = []
    counter = iter(range(1_000_000))

    def make(port: int, username: str | None, password: str | None, **kw: Any) -> Probe:
        kw.setdefault("client_id", f"probe-{username or 'anon'}-{next(counter)}")
        probe = Probe(port, username, password, **kw)
        made.append(probe)
        probe.connect()
        return probe

    yield make
    for probe in made:
        probe.close()
