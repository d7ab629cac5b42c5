"""Keeping secrets out of log lines: URL passwords, the MQTT password, API tokens.

A secret in a log line is a secret on every machine the logs are shipped to
(Loki, Elastic, a support ticket).  Two layers keep them out:

* ``redact_url`` for code that shows a URL on purpose (``emguard serve``'s
  start-up line names the broker and the Redis it uses);
* ``RedactingFilter``, installed on the log handlers by ``engine.runtime.logjson`` and
  the CLI, as defence in depth: it masks the password of any
  ``scheme://user:password@host`` URL and every registered secret
  (``register_secret``) in the message, the formatted arguments, the
  exception text and string ``extra`` fields of every record, whatever
  library wrote it (redis-py and uvicorn messages included).
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values would mask ordinary words; such a secret is refused elsewhere

# scheme://[user]:password@ — the password runs to the last '@' before the host part (greedy:
# an unencoded '@' inside the password is masked too, as urllib reads it)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^\s/]*)@")

_lock = threading.Lock()
_secrets: set[str] = set()


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (user name, host, path kept).

    ``redis://:s3cret@redis:6379/0`` -> ``redis://:***@redis:6379/0``.  A URL
    that does not parse is masked by pattern instead, so this never raises.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return _URL_PASSWORD.sub(_mask_match, url)
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        netloc = f"{user}:{MASK}@{host}{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:  # e.g. a port that is not a number
        return _URL_PASSWORD.sub(_mask_match, url)


def _mask_match(match: re.Match[str]) -> str:
    return f"{match.group('head')}{MASK}@"


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in a log record from now on (process-wide)."""
    if value and len(value) >= MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests)."""
    with _lock:
        _secrets.clear()


def redact_text(text: str) -> str:
    """``text`` with registered secrets and URL passwords masked.

    Registered secrets go first: masking a URL first could cut a known
    password in two and leave half of it in the text.
    """
    out = text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    for secret in secrets:
        if secret in out:
            out = out.replace(secret, MASK)
    return _URL_PASSWORD.sub(_mask_match, out)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record before any handler formats it; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place: message, exception text and string extras."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the formatter report it as usual
            return True
        clean = redact_text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact_text(
                "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            )
            record.exc_info = None  # the formatter uses the masked exc_text instead
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in _PLAIN:
                setattr(record, key, redact_text(value))
        return True


_PLAIN = {
    "msg",
    "exc_text",
    "stack_info",
    "name",
    "levelname",
    "pathname",
    "filename",
    "module",
    "funcName",
    "threadName",
    "processName",
    "taskName",
}


def install(handler: logging.Handler) -> None:
    """Add one ``RedactingFilter`` to ``handler`` (idempotent)."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
