"""A QoS 1 MQTT publisher on a plain socket, for the ingest benchmark (not a general client).

paho's publish path costs ~40-70 us of CPU per message on the benchmark machine, so with
publisher, broker and engine on 2 cores the publisher, not the engine, set the pace: no
engine could be shown above ~14,000 msg/s.  This one writes MQTT 3.1.1 PUBLISH packets
(QoS 1, a packet id each) straight to the socket, many per ``send``, keeps at most
``inflight`` unacknowledged (as paho with ``max_inflight_messages_set``), and reads the
broker's PUBACKs in bulk: a few microseconds per message.  It sends the stream exactly as
given, in order; a PINGREQ every ``keepalive / 2`` seconds keeps a slow (paced) run connected.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable, Sequence

from engine.runtime.intake import remaining_length  # the engine's own PUBLISH framing

CONNECT, CONNACK, PUBLISH_QOS1, PUBACK, PINGREQ = 0x10, 0x20, 0x32, 0x40, 0xC0
PINGREQ_PACKET = b"\xc0\x00"
# a paced stream goes out in bursts at least this far apart (at 10,000 msg/s, 10 messages):
# devices' messages reach a broker in bursts too, and each stamp is still its send time
PACE_S = 0.001


class ProtocolError(RuntimeError):
    """The broker refused the connection or sent something this publisher does not expect."""


def publish_packet(topic: bytes, mid: int, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH (no DUP, no retain)."""
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + payload
    return bytes((PUBLISH_QOS1,)) + remaining_length(len(body)) + body


class FloodPublisher:
    """One MQTT 3.1.1 connection (clean session) that publishes a stream at QoS 1."""

    def __init__(self, host: str, port: int, client_id: str, inflight: int = 100, keepalive: int = 60) -> None:
        self.inflight_max = inflight
        self.keepalive = keepalive
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        body = (
            b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive) + struct.pack("!H", len(cid)) + cid
        )
        self.sock.sendall(bytes((CONNECT,)) + remaining_length(len(body)) + body)
        ack = self._read_exact(4)
        if ack[0] != CONNACK or ack[3] != 0:
            raise ProtocolError(f"connection refused: CONNACK {ack.hex()}")
        self._buf = b""
        self.inflight = 0
        self._mid = 0
        self._last_sent = time.monotonic()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ProtocolError("connection closed by the broker")
            data += chunk
        return data

    def _read_acks(self, wait_s: float) -> None:
        """Take every packet that has arrived (waiting up to ``wait_s`` for the first)."""
        ready, _, _ = select.select([self.sock], [], [], wait_s)
        if not ready:
            return
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ProtocolError("connection closed by the broker")
        buf = self._buf + chunk
        pos = 0
        while len(buf) - pos >= 2:
            kind = buf[pos] & 0xF0
            # every packet a publisher gets here (PUBACK, PINGRESP) has a one-byte length
            if buf[pos + 1] & 0x80:
                raise ProtocolError(f"unexpected packet {buf[pos:pos + 8].hex()}")
            end = pos + 2 + buf[pos + 1]
            if end > len(buf):
                break
            if kind == PUBACK:
                self.inflight -= 1
            elif kind != 0xD0:  # PINGRESP
                raise ProtocolError(f"unexpected packet type 0x{kind:02x}")
            pos = end
        self._buf = buf[pos:]

    def _next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    def publish(
        self,
        stream: Sequence[tuple[str, bytes, bytes]],
        stamp: Callable[[float], bytes],
        rate: float = 0.0,
    ) -> tuple[float, float]:
        """Publish ``head + stamp(now) + tail`` on each topic; paced at ``rate`` msg/s when > 0.

        Returns (first publish, last PUBACK) in wall-clock seconds.
        """
        topics: dict[str, bytes] = {}
        out: list[bytes] = []
        t0 = time.time()
        n = len(stream)
        j = 0
        while j < n:
            now = time.time()
            room = self.inflight_max - self.inflight
            limit = n if rate <= 0 else min(n, int((now - t0) * rate) + 1)
            while room > 0 and j < limit:
                topic, head, tail = stream[j]
                t = topics.get(topic)
                if t is None:
                    t = topics[topic] = topic.encode()
                out.append(publish_packet(t, self._next_mid(), head + stamp(now) + tail))
                room -= 1
                j += 1
            if out:
                self.inflight += len(out)
                self.sock.sendall(b"".join(out))
                out.clear()
                self._last_sent = time.monotonic()
            if j < n and rate > 0 and j >= limit:
                wait = max(PACE_S, t0 + j / rate - time.time())
                if self.inflight < self.inflight_max:
                    # room to send: sleep until the next message is due instead of waking for
                    # every PUBACK (a wake-up per message cost ~80 us of the 2 shared cores)
                    time.sleep(min(wait, 1.0))
                    wait = 0.0
            else:
                wait = 1.0 if self.inflight >= self.inflight_max else 0.0
            self._read_acks(min(wait, 1.0))
            self._ping_if_quiet()
        while self.inflight > 0:
            self._read_acks(1.0)
            self._ping_if_quiet()
        return t0, time.time()

    def _ping_if_quiet(self) -> None:
        if time.monotonic() - self._last_sent > self.keepalive / 2:
            self.sock.sendall(PINGREQ_PACKET)
            self._last_sent = time.monotonic()

    def close(self) -> None:
        """DISCONNECT and close the socket."""
        try:
            self.sock.sendall(b"\xe0\x00")
        finally:
            self.sock.close()
