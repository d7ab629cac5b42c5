"""One error tree for the devices package.

A device's bad input is never raised out of the package: the decoder turns every
problem into a ``Rejection`` record.  ``InvalidPayload`` is only the internal
signal a validator uses to stop at the first problem; ``decode_message``
catches it.  Misconfiguration (a bad registry file) raises ``RegistryError`` at
start-up with a message that says what to fix.
"""

from __future__ import annotations

from devices.model import RejectReason


class DeviceError(Exception):
    """Base of every error raised by the devices package."""


class InvalidPayload(DeviceError):
    """A payload failed one validation check; carries the reason code and a readable detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RegistryError(DeviceError):
    """A device registry file or entry is invalid; the message names the entry to fix."""
