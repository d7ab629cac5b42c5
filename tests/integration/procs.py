"""Real mosquitto, Redis and engine processes on free 127.0.0.1 ports, for fault tests.

Every test owns its processes (never the machine's shared services on 1883/6379) and can
stop, restart or SIGKILL them.  A missing binary fails the test: CI must install them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from engine.runtime.broker import free_port, mosquitto_binary, wait_for_port


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is not installed: integration tests need it (see .ci/run)")
    return path


@dataclass
class Proc:
    """A child process that can be restarted on the same port."""

    argv: list[str]
    port: int
    env: dict[str, str] | None = None
    log: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def spawn(self) -> None:
        """Start the process (returns at once; ``start`` also waits for its port)."""
        if self.log is not None:
            with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
                self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        else:
            self.popen = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=self.env)

    async def start(self, wait_port: int | None = None) -> None:
        self.spawn()
        await wait_for_port("127.0.0.1", wait_port or self.port, within_s=60.0)

    def kill(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def mosquitto(tmp: Path) -> Proc:
    binary = mosquitto_binary() or _binary("mosquitto")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\nmax_inflight_messages 100\n"
    )
    return Proc([binary, "-c", str(conf)], port, log=tmp / "mosquitto.log")


def redis(tmp: Path) -> Proc:
    binary = _binary("redis-server")
    port = free_port()
    data = tmp / "redis"
    data.mkdir(exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    return Proc(argv, port, log=tmp / "redis.log")


API_TOKEN = "integration-supervisor-token"  # `emguard serve` refuses an API without tokens
API_HEADERS = {"authorization": f"Bearer {API_TOKEN}"}


def engine(tmp: Path, broker_port: int, redis_port: int, orders: Path, client_id: str = "emguard-engine-a",
           **extra_env: str) -> Proc:
    http = free_port()
    env = {**os.environ, "EMGUARD_BROKER": f"mqtt://127.0.0.1:{broker_port}",
           "EMGUARD_REDIS": f"redis://127.0.0.1:{redis_port}/0", "EMGUARD_ORDERS": str(orders),
           "EMGUARD_HTTP_PORT": str(http), "EMGUARD_CLIENT_ID": client_id,
           "EMGUARD_API_TOKENS": f"{API_TOKEN}:integration:supervisor", **extra_env}
    argv = [sys.executable, "-m", "engine.tools.cli", "--log-level", "INFO", "serve"]
    return Proc(argv, http, env=env, log=tmp / f"engine-{client_id}.log")


async def ready(engine_proc: Proc, within_s: float = 60.0) -> None:
    """Wait for the engine's /readyz: subscribed, so what devices publish from now on reaches it.

    Its HTTP port opens before it has even connected to the broker, and a broker drops messages
    on topics nobody is subscribed to yet: publishing right after ``start`` loses the first ones.
    """
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{engine_proc.port}", timeout=5) as c:
        async def subscribed() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return (await c.get("/readyz")).status_code == 200
            return False

        loop = asyncio.get_running_loop()
        end = loop.time() + within_s
        while not await subscribed():
            if loop.time() > end:
                raise AssertionError(f"the engine was not ready (subscribed) within {within_s} s")
            await asyncio.sleep(0.05)


async def until(pred, within_s: float, what: str) -> None:
    """Wait for a condition or fail saying what did not happen."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.05)
