"""Device side of emguard: payload decoding and validation, device registry, device health.

Everything here is pure (bytes and time in, typed records out) so the service,
replay and the simulator share one decoder.
"""

from devices.model import DeviceEvent, Fix, Rejection, RejectReason

__all__ = ["DeviceEvent", "Fix", "RejectReason", "Rejection"]
