"""LeanPublishPaho decodes a PUBLISH exactly as paho does (paho's decoder is the reference)."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt._packet import decode_publish
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from engine.runtime.intake import NOT_UTF8, LeanPublishPaho


def _packet(topic: bytes, mid: int, qos: int, props: bytes | None, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += mid.to_bytes(2, "big")
    if props is not None:
        body += props
    return body + payload


def _lean(protocol: int) -> tuple[LeanPublishPaho, list[tuple[str, bytes, int, int]]]:
    client = LeanPublishPaho(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
    client.manual_ack_set(True)  # no socket: nothing may be sent
    got: list[tuple[str, bytes, int, int]] = []
    client.ingest_sink = lambda *m: got.append(m)
    return client, got


# MQTT strings exclude U+0000 (the broker refuses them; the lean path does not re-check
# properties it skips, paho's decoder does)
mqtt_text = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
properties = st.fixed_dictionaries({}, optional={
    "MessageExpiryInterval": st.integers(0, 2**32 - 1),
    "ContentType": st.text(mqtt_text, max_size=40),
    "ResponseTopic": st.text(mqtt_text, min_size=1, max_size=40),
    "CorrelationData": st.binary(max_size=300),
    "UserProperty": st.lists(
        st.tuples(st.text(mqtt_text, max_size=20), st.text(mqtt_text, max_size=200)), max_size=5
    ),
    "PayloadFormatIndicator": st.integers(0, 1),
})


@settings(max_examples=300, deadline=None)
@given(
    topic=st.text(mqtt_text, min_size=1, max_size=80),
    payload=st.binary(max_size=2000),
    qos=st.integers(0, 1),
    mid=st.integers(1, 65535),
    v5=st.booleans(),
    props=properties,
    dup=st.booleans(),
    retain=st.booleans(),
)
def test_lean_decoding_matches_paho(topic, payload, qos, mid, v5, props, dup, retain):
    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    packed = None
    if v5:
        p = Properties(PacketTypes.PUBLISH)
        for name, value in props.items():
            setattr(p, name, value)
        packed = p.pack()
    packet = _packet(topic.encode(), mid, qos, packed, payload)
    header = 0x30 | (dup << 3) | (qos << 1) | retain
    reference = decode_publish(header, packet, protocol)
    client, got = _lean(protocol)
    client._in_packet = {"command": header, "packet": bytearray(packet)}
    assert client._handle_publish() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == [(reference.topic.decode(), bytes(reference.payload), reference.mid, qos)]


def test_a_topic_that_is_not_utf8_is_named_so_and_still_delivered():
    client, got = _lean(mqtt.MQTTv5)
    client._in_packet = {"command": 0x32, "packet": bytearray(_packet(b"em/\xff", 7, 1, b"\x00", b"{}"))}
    client._handle_publish()
    assert got == [(NOT_UTF8, b"{}", 7, 1)]


def test_a_truncated_publish_is_an_error_not_a_short_payload():
    client, got = _lean(mqtt.MQTTv5)
    client._in_packet = {"command": 0x32, "packet": bytearray(_packet(b"em/x", 7, 1, b"\x05\x01", b""))}
    try:
        client._handle_publish()
    except ValueError as exc:
        assert "malformed PUBLISH" in str(exc)
    else:
        raise AssertionError("a PUBLISH whose properties run past its end was accepted")
    assert got == []


@settings(max_examples=100, deadline=None)
@given(mids=st.lists(st.integers(1, 65535), max_size=300),
       protocol=st.sampled_from([mqtt.MQTTv311, mqtt.MQTTv5]))
def test_ack_many_queues_the_bytes_paho_acks_would_as_one_write(mids: list[int], protocol: int) -> None:
    """The engine acknowledges a micro-batch's QoS 1 messages with one write: the same bytes as
    paho's ``ack`` for each (there is no socket, so the queued packets stay to be read)."""
    one_by_one, _ = _lean(protocol)
    for mid in mids:
        one_by_one.ack(mid, 1)
    batched, _ = _lean(protocol)
    batched.ack_many(mids)
    expected = b"".join(bytes(p["packet"]) for p in one_by_one._out_packet)
    assert b"".join(bytes(p["packet"]) for p in batched._out_packet) == expected
    assert len(batched._out_packet) == (1 if mids else 0)


def _frame(header: int, body: bytes) -> bytes:
    from engine.runtime.intake import remaining_length

    return bytes((header,)) + remaining_length(len(body)) + body


publishes = st.tuples(
    st.text(mqtt_text, min_size=1, max_size=40), st.binary(max_size=400), st.integers(0, 1),
    st.integers(1, 65535),
)


@settings(max_examples=300, deadline=None)
@given(
    packets=st.lists(st.one_of(publishes, st.sampled_from(["puback", "pingresp", "qos2"])), max_size=30),
    v5=st.booleans(),
    cut=st.integers(0, 10**6),
)
def test_take_publishes_reads_the_leading_publishes_of_a_chunk_as_paho_would(packets, v5, cut):
    """Complete QoS 0/1 PUBLISHes in order up to the first other packet or the first one cut off
    by the end of the chunk; where it stops is where paho must go on reading."""
    from engine.runtime.intake_frames import take_publishes

    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    frames: list[tuple[bytes, tuple[str, bytes, int, int] | None]] = []
    for p in packets:
        if p == "puback":
            frames.append((b"\x40\x02\x00\x07", None))
        elif p == "pingresp":
            frames.append((b"\xd0\x00", None))
        elif p == "qos2":
            frames.append((_frame(0x34, _packet(b"em/q2", 9, 2, b"\x00" if v5 else None, b"x")), None))
        else:
            topic, payload, qos, mid = p
            body = _packet(topic.encode(), mid, qos, b"\x00" if v5 else None, payload)
            ref = decode_publish(0x30 | qos << 1, body, protocol)
            frames.append((_frame(0x30 | qos << 1, body), (ref.topic.decode(), bytes(ref.payload), ref.mid, qos)))
    stream = b"".join(f for f, _ in frames)
    chunk = stream[: cut % (len(stream) + 1)]
    expected, end = [], 0
    for frame, decoded in frames:
        if decoded is None or end + len(frame) > len(chunk):
            break
        expected.append(decoded)
        end += len(frame)
    got: list[tuple[str, bytes, int, int]] = []
    assert take_publishes(b"junk" + chunk, 4, v5, got) == 4 + end
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(st.text(mqtt_text, min_size=1, max_size=60), st.binary(max_size=600)), max_size=20),
       v5=st.booleans())
def test_publish_qos1_writes_packets_paho_decodes_as_sent(items, v5):
    """The outbox's lean publishes are QoS 1 PUBLISH packets with fresh packet ids, queued as
    one write, that paho's own decoder reads back as the topics and payloads given."""
    from engine.runtime.intake_frames import take_publishes

    protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    client, _ = _lean(protocol)
    client.lean_acks = {}
    mids = client.publish_qos1(items)
    assert len(set(mids)) == len(mids) and all(1 <= m <= 65535 for m in mids)
    assert len(client._out_packet) == (1 if items else 0)
    wire = b"".join(bytes(p["packet"]) for p in client._out_packet)
    back: list[tuple[str, bytes, int, int]] = []
    assert take_publishes(wire, 0, v5, back) == len(wire)
    assert back == [(t, p, m, 1) for (t, p), m in zip(items, mids, strict=True)]
    pos = 0
    for _, payload in items:  # and paho's decoder agrees on each packet
        length, shift, i = 0, 0, pos + 1
        while True:
            length |= (wire[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not wire[i - 1] & 0x80:
                break
        assert bytes(decode_publish(0x32, wire[i : i + length], protocol).payload) == payload
        pos = i + length
