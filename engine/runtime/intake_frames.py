"""MQTT PUBLISH packets out of received bytes, for the intake (engine/runtime/intake.py).

Every device message is a QoS 1 PUBLISH.  paho reads a packet in three ``recv`` calls and
several Python functions, ~10 us per message on the benchmark machine, about a third of what
the engine spends deciding on the fix.  ``take_publishes`` reads all complete QoS 0/1 PUBLISH
packets of a received chunk in one compiled loop (engine.tools.native); paho still reads every
other packet (PUBACKs, SUBACKs, PINGRESP, QoS 2) and any PUBLISH split across two reads, and
the fields of a PUBLISH are read by ``publish_fields`` on both paths.

Nothing here knows sockets or paho: bytes in, (topic, payload, packet id, QoS) out.
"""

from __future__ import annotations

from typing import Final

NOT_UTF8: Final = "(topic not UTF-8)"  # MQTT topics are UTF-8; the engine dead-letters this one
PUBLISH: Final = 0x30

Publish = tuple[str, bytes, int, int]  # topic, payload, packet id (0 for QoS 0), QoS


def publish_fields(buf: bytes, start: int, end: int, qos: int, v5: bool) -> tuple[str, bytes, int]:
    """(topic, payload, packet id) of a PUBLISH whose variable header starts at ``start`` and
    whose packet ends at ``end``; ``ValueError`` when its fields run past ``end``.

    MQTT v5 properties are skipped (their length is a variable byte integer).  None carries
    what the engine needs: a topic alias could, but a broker sends aliases only to a client
    whose CONNECT allowed them (Topic Alias Maximum), and ours does not.
    """
    if end - start < 2:
        raise ValueError(f"malformed PUBLISH: {end - start} bytes, no room for the topic length")
    pos = start + 2 + ((buf[start] << 8) | buf[start + 1])
    if pos > end:
        raise ValueError(f"malformed PUBLISH: {end - start} bytes, the topic runs past them")
    try:
        topic = buf[start + 2 : pos].decode("utf-8")
    except UnicodeDecodeError:
        topic = NOT_UTF8
    mid = 0
    if qos:
        if pos + 2 > end:
            raise ValueError(f"malformed PUBLISH: {end - start} bytes, no packet id")
        mid = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
    if v5:
        length = 0
        shift = 0
        while True:
            if pos >= end:
                raise ValueError(f"malformed PUBLISH: {end - start} bytes, properties unterminated")
            byte = buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        pos += length
        if pos > end:
            raise ValueError(f"malformed PUBLISH: {end - start} bytes, properties run past them")
    return topic, buf[pos:end], mid


def take_publishes(buf: bytes, pos: int, v5: bool, out: list[Publish]) -> int:
    """Append each complete QoS 0/1 PUBLISH from ``buf[pos:]`` to ``out``; return where it stopped.

    Stops before the first packet that is incomplete or of another kind (left for paho, which
    reads it from the same bytes).  ``ValueError`` for a PUBLISH that breaks the protocol: the
    connection is broken then, as when paho reads one.
    """
    n = len(buf)
    while pos + 2 <= n:
        header = buf[pos]
        qos = (header & 0x06) >> 1
        if header & 0xF0 != PUBLISH or qos > 1:
            break
        length = 0
        shift = 0
        i = pos + 1
        complete = False
        while i < n:
            byte = buf[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                complete = True
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed PUBLISH: remaining length longer than 4 bytes")
        end = i + length
        if not complete or end > n:
            break
        topic, payload, mid = publish_fields(buf, i, end, qos, v5)
        out.append((topic, payload, mid, qos))
        pos = end
    return pos
