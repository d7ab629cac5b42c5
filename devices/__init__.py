"""Device side of emguard: payload decoding and validation, device registry, device health.

Everything here is pure (bytes and time in, typed records out) so the service,
replay and the simulator share one decoder.  ``devices.registry`` (which needs
the orders model) and ``devices.health`` are imported from their modules.
"""

from devices.decode import Decoded, dead_letter_record, decode_message
from devices.errors import DeviceError
from devices.model import DeviceEvent, Fix, Rejection, RejectReason
from devices.topics import TopicRef, TopicScheme

__all__ = [
    "Decoded",
    "DeviceError",
    "DeviceEvent",
    "Fix",
    "RejectReason",
    "Rejection",
    "TopicRef",
    "TopicScheme",
    "dead_letter_record",
    "decode_message",
]
