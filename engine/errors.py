"""One error tree for the engine: misconfiguration fails at start-up with a message that says what to fix."""


class EngineError(Exception):
    """Base of every error raised by the engine package."""


class OrdersError(EngineError):
    """An orders file or order payload is invalid; the message names the order or zone."""


class ConfigError(EngineError):
    """The service configuration is invalid or incomplete."""
