"""One JSON object per log line, for log shippers (Loki, Elastic) and the audit trail.

``JsonFormatter`` keeps the standard fields (time in UTC, level, logger,
message), adds the exception text when there is one, and passes through
``extra={...}`` fields, so a line can be filtered by alert id or device
without parsing prose.

Every handler set up here (and by the CLI) carries ``engine.redact``'s
filter, so a password inside a URL, the MQTT password or an API token never
reaches a log line, whichever library formatted the message.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from devices.timeutil import format_time
from engine.redact import install as install_redaction

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as a single-line JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "t": format_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and masked) by the redacting filter
            doc["exc"] = record.exc_text
        return json.dumps(doc, default=str, separators=(",", ":"), ensure_ascii=False)


def use_json_logs(level: str | int = "INFO") -> None:
    """Replace the root handlers with one stderr handler writing JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    install_redaction(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
