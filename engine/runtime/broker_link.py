"""How the service reaches the MQTT broker: address, logins, protocol version, its two clients.

The service keeps two connections (engine.runtime.service): one receives device traffic and
acknowledges each message only once it is committed; the other publishes the outbox, so a
PUBACK for an alarm never waits behind device traffic.  This module builds both and keeps the
protocol both use: MQTT v5 unless the broker refuses it (``auto``), then 3.1.1 for both.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from typing import Any
from urllib.parse import urlparse

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from engine.core.config import ServiceConfig
from engine.runtime.intake import IngestClient, Sink, SinkMany

log = logging.getLogger(__name__)

# MQTT v5 Receive Maximum: unacknowledged QoS 1 messages the broker may have sent us.  Without
# it a v5 client allows 65,535 and mosquitto ignores its max_inflight_messages: a flood then
# stacks up in the socket.  1,024 is ~0.1 s of work at full speed.  Not a hard bound: mosquitto
# 2.0.11 sent 3x a Receive Maximum of 100 while acks and new messages interleaved, and 20,000+
# were outstanding in the ingest benchmark's Redis pass (hence the separate publishing connection).
RECEIVE_MAXIMUM = 1024
PUBLISH_WINDOW = 16  # QoS 1 publishes in flight at once (paho allows 20 by default)


class BrokerLink:
    """The broker as the service sees it: where, as whom, which MQTT version, what to subscribe."""

    def __init__(self, config: ServiceConfig, *, protocol: str = "auto",
                 persistent_session: bool = True) -> None:
        self.config = config
        self.protocol = protocol  # "auto", "5" or "3.1.1"; auto settles on the first refusal
        self.persistent_session = persistent_session
        self.connected_protocol: str | None = None  # of the receiving connection, once made

    def version(self) -> aiomqtt.ProtocolVersion:
        """The version the next connection attempt uses."""
        return aiomqtt.ProtocolVersion.V311 if self.protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5

    def v5_refused(self, exc: aiomqtt.MqttError, tried: aiomqtt.ProtocolVersion) -> bool:
        """Whether the broker refused an MQTT v5 attempt in auto mode: both connections then use 3.1.1."""
        if tried != aiomqtt.ProtocolVersion.V5 or self.protocol == "5" or "protocol" not in str(exc).lower():
            return False
        if self.protocol == "auto":  # the other connection may have found out first
            log.warning("broker refused MQTT v5 (%s); using 3.1.1", exc)
            self.protocol = "3.1.1"
        return True

    def connect_options(self, *, publishing: bool = False) -> dict[str, Any]:
        """Where and how to connect: the same broker and TLS for both connections, each its login.

        A broker that binds every login to its own client id (the generated mosquitto config:
        ``use_username_as_clientid``, so no device can knock another client off by taking its
        id) needs a login per connection: the publishing one uses ``mqtt_publish_username``,
        by default ``<mqtt_username>-pub``, with its own password or the same one.
        """
        cfg = self.config
        url = urlparse(cfg.broker)
        tls = None
        if url.scheme == "mqtts":
            tls = ssl.create_default_context(cafile=cfg.mqtt_ca)
        username, password = cfg.mqtt_username, cfg.mqtt_password
        if publishing and username:
            username = cfg.mqtt_publish_username or f"{username}-pub"
            password = cfg.mqtt_publish_password or password
        return {
            "hostname": url.hostname or "127.0.0.1",
            "port": url.port or (8883 if url.scheme == "mqtts" else 1883),
            "username": username,
            "password": password,
            "tls_context": tls,
            "keepalive": 15,
        }

    def address(self) -> str:
        """host:port of the broker, for log lines (never the URL: it may carry credentials)."""
        url = urlparse(self.config.broker)
        return f"{url.scheme}://{url.hostname}:{url.port or ''}"

    def publishing_client(self, version: aiomqtt.ProtocolVersion) -> IngestClient:
        """A clean session that subscribes to nothing: the durable outbox republishes what it lost.

        An ``IngestClient`` for its reading (and ``TCP_NODELAY``): aiomqtt's own reads one
        packet per socket wake-up, so under a device flood, where a loop turn is a micro-batch,
        a window of PUBACKs took a turn each.  Most of the delay the ingest benchmark showed
        (alerts p50 1.7 s late at 80 % of the raw rate) was Nagle and delayed ACKs, though: the
        broker needs ``set_tcp_nodelay`` (deploy/broker/mosquitto.conf has it).
        """
        client = IngestClient(
            identifier=f"{self.config.client_id}-pub", protocol=version, sink=_stray,
            **self.connect_options(publishing=True),
        )
        client.pending_calls_threshold = 4 * PUBLISH_WINDOW  # a full window is not "concerning"
        return client

    def receiving_client(self, version: aiomqtt.ProtocolVersion, sink: Sink,
                         sink_many: SinkMany) -> IngestClient:
        """The device connection: manual acks, a persistent session unless told otherwise."""
        self.connected_protocol = "3.1.1" if version == aiomqtt.ProtocolVersion.V311 else "5"
        kwargs: dict[str, Any] = {}
        if version == aiomqtt.ProtocolVersion.V5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = RECEIVE_MAXIMUM
            kwargs["properties"] = props
            if self.persistent_session:
                props.SessionExpiryInterval = 3600
                kwargs["clean_start"] = False
        else:
            kwargs["clean_session"] = not self.persistent_session
        client = IngestClient(
            identifier=self.config.client_id,
            protocol=version,
            sink=sink,
            sink_many=sink_many,
            **self.connect_options(),
            **kwargs,
        )
        # private (aiomqtt does not expose it): ack only once processed, with a store only once
        # committed; this is also what bounds how much the broker sends ahead
        client._client.manual_ack_set(True)
        return client

    def device_topics(self) -> list[str]:
        """Device fixes and events, and OwnTracks; shared by a group when one is configured."""
        prefix = self.config.topic_prefix
        topics = [f"{prefix}/dev/+/fix", f"{prefix}/dev/+/event", "owntracks/+/+"]
        group = self.config.shared_group
        if group and self.connected_protocol == "5":
            topics = [f"$share/{group}/{t}" for t in topics]
        return topics

    async def subscribe(self, client: aiomqtt.Client) -> None:
        """Device topics and operators' acknowledgements, QoS 1."""
        for topic in [*self.device_topics(), f"{self.config.topic_prefix}/ack"]:
            await client.subscribe(topic, qos=1)

    async def leave_shared_group(self, client: aiomqtt.Client) -> None:
        """Unsubscribe shared topics before a clean stop so the broker routes to the other workers.

        mosquitto keeps routing shared-subscription messages to a disconnected worker whose
        session persists (upstream bug #2662); unsubscribing first strands nothing.
        """
        if not self.config.shared_group or self.connected_protocol != "5":
            return
        with contextlib.suppress(aiomqtt.MqttError):
            for topic in self.device_topics():
                await client.unsubscribe(topic)


def _stray(topic: str, payload: bytes, mid: int, qos: int) -> None:
    """A message on the publishing connection, which subscribes to nothing: not ours to take."""
    log.warning("ignored a message on %s delivered to the publishing connection", topic)
