"""An MQTT broker for ``emguard demo`` and unit tests when none is given.

Prefers a private mosquitto process (MQTT v5, fast) when the binary is on
PATH; otherwise runs amqtt in-process, which speaks MQTT 3.1.1 only (see
traps.md) — the service then connects with protocol 3.1.1 and plain
subscriptions.  Production always uses a real, configured broker (deploy/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(host: str, port: int, within_s: float = 10.0) -> None:
    """Poll until something accepts TCP connections on host:port."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {within_s} s") from None
            await asyncio.sleep(0.05)


def mosquitto_binary() -> str | None:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


@dataclass(slots=True)
class BrokerInfo:
    """Where the embedded broker listens and which MQTT protocol it speaks."""

    url: str
    protocol: str  # "5" or "3.1.1"
    kind: str  # "mosquitto" or "amqtt"


class EmbeddedBroker:
    """``async with EmbeddedBroker() as info:`` gives a broker on a free 127.0.0.1 port."""

    def __init__(self, prefer: str = "auto", port: int | None = None) -> None:
        self.prefer = prefer
        self.port = port or free_port()
        self._proc: asyncio.subprocess.Process | None = None
        self._amqtt: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> BrokerInfo:
        mosquitto = mosquitto_binary()
        if self.prefer in ("auto", "mosquitto") and mosquitto:
            return await self._start_mosquitto(mosquitto)
        if self.prefer == "mosquitto":
            raise RuntimeError("mosquitto not found on PATH")
        return await self._start_amqtt()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _start_mosquitto(self, binary: str) -> BrokerInfo:
        self._tmp = tempfile.TemporaryDirectory(prefix="emguard-broker-")
        conf = Path(self._tmp.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {Path(self._tmp.name) / 'mosquitto.log'}\n"
        )
        self._proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(conf),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_for_port("127.0.0.1", self.port)
        log.info("embedded mosquitto on 127.0.0.1:%d", self.port)
        return BrokerInfo(f"mqtt://127.0.0.1:{self.port}", "5", "mosquitto")

    async def _start_amqtt(self) -> BrokerInfo:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._amqtt = Broker(config)
        await self._amqtt.start()  # returns with the listener up; a bare TCP probe would only
        # make amqtt log an ERROR for a client that sent no MQTT packet
        log.info("embedded amqtt (MQTT 3.1.1) on 127.0.0.1:%d", self.port)
        return BrokerInfo(f"mqtt://127.0.0.1:{self.port}", "3.1.1", "amqtt")

    async def stop(self) -> None:
        """Stop whichever broker runs; safe to call twice."""
        if self._proc is not None:
            if self._proc.returncode is None:
                self._proc.terminate()
                try:
                    await asyncio.wait_for(self._proc.wait(), 5)
                except TimeoutError:
                    self._proc.kill()
                    await self._proc.wait()
            self._proc = None
        if self._amqtt is not None:
            with contextlib.suppress(Exception):
                await self._amqtt.shutdown()
            self._amqtt = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
