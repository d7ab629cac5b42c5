"""Secrets never reach a log line: URL passwords, the MQTT password, API tokens (issue 21)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.config import ServiceConfig
from engine.core.testing import orders_doc
from engine.redact import (
    RedactingFilter,
    forget_secrets,
    redact_text,
    redact_url,
    register_secret,
)
from engine.runtime.logjson import JsonFormatter, use_json_logs
from engine.runtime.store import StoreUnavailable
from engine.runtime.store_redis import RedisStore
from engine.tools import serve

REDIS_PW = "redis-pw-Zq81xK"
MQTT_PW = "mqtt-pw-Lp07wD"
TOKEN = "api-token-Hn44vQ0123456789"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    """Put the root handlers back and forget registered secrets after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    forget_secrets()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://user:s3cret@redis:6379/0", "redis://user:***@redis:6379/0"),
        (
            "rediss://u:p%40ss@[::1]:6380/2?ssl_cert_reqs=none",
            "rediss://u:***@[::1]:6380/2?ssl_cert_reqs=none",
        ),
        ("mqtts://engine:pw@mosquitto:8883", "mqtts://engine:***@mosquitto:8883"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
        ("redis://:s3cret@host:notaport/0", "redis://:***@host:notaport/0"),
        ("redis://:p@ss@host:6379/0", "redis://:***@host:6379/0"),
    ],
)
def test_redact_url_masks_only_the_password(url: str, shown: str) -> None:
    """User, host, port, path and query stay readable; the password never does."""
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "text",
    [
        "store redis://:p@ss-Zq81@host:6379/0 down, see mailto:ops@example.org",
        "two: redis://u:p@ss-Zq81@a/0 and mqtt://e:p@ss-Zq81@b:1883",
    ],
)
def test_text_with_an_at_sign_in_the_password_leaks_no_part_of_it(text: str) -> None:
    """An unencoded '@' in a password does not leave its tail in the line, registered or not."""
    for registered in (False, True):
        if registered:
            register_secret("p@ss-Zq81")
        out = redact_text(text)
        assert "ss-Zq81" not in out and "p@" not in out, out
        if "mailto:" in text:  # an address that is not a URL password stays readable
            assert "mailto:ops@example.org" in out


def test_filter_masks_message_args_exception_and_extras() -> None:
    """A record carrying a URL password or a registered secret anywhere is masked before formatting."""
    register_secret(MQTT_PW)
    try:
        raise ConnectionError(f"redis redis://:{REDIS_PW}@h:6379/0: refused")
    except ConnectionError:
        record = logging.getLogger("x").makeRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            "store at %s failed with %s",
            (f"redis://u:{REDIS_PW}@h/0", MQTT_PW),
            __import__("sys").exc_info(),
            extra={"url": f"mqtt://e:{REDIS_PW}@b:1883"},
        )
    assert RedactingFilter().filter(record) is True
    line = JsonFormatter().format(record)
    assert REDIS_PW not in line and MQTT_PW not in line
    doc = json.loads(line)
    assert doc["msg"] == "store at redis://u:***@h/0 failed with ***"
    assert "ConnectionError: redis redis://:***@h:6379/0: refused" in doc["exc"]
    assert doc["url"] == "mqtt://e:***@b:1883"
    plain = logging.Formatter("%(message)s").format(record)
    assert REDIS_PW not in plain and "redis://:***@h:6379/0" in plain


async def test_redis_password_not_logged_when_the_store_cannot_connect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A RedisStore with a password URL failing to connect: the logged error shows host, not password."""
    use_json_logs("INFO")
    log = logging.getLogger("engine.runtime.service")
    store = RedisStore(f"redis://:{REDIS_PW}@127.0.0.1:{_closed_port()}/0")
    try:
        with pytest.raises(StoreUnavailable) as info:
            await store.load_state()
        assert REDIS_PW not in str(info.value)  # redacted at the source: it also reaches /readyz
        log.warning("state store unavailable at start (%s); retrying", info.value)
        try:
            raise info.value
        except StoreUnavailable:
            log.exception("state store failed")
    finally:
        with contextlib.suppress(Exception):
            await store.redis.aclose()
    err = capsys.readouterr().err
    assert "state store unavailable" in err and "redis://:***@127.0.0.1" in err
    assert REDIS_PW not in err


async def test_serve_start_up_logs_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """emguard serve with passwords in both URLs, an MQTT password and a token logs none of them."""
    monkeypatch.setattr(serve, "freeze_loaded_state", lambda: None)  # keep this process's gc as is
    monkeypatch.setattr(serve.FreezeAfterFullPass, "install", lambda self: self)
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(orders_doc()))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}:sue:supervisor\n")
    cfg = ServiceConfig(
        broker=f"mqtt://engine:{REDIS_PW}x@127.0.0.1:{_closed_port()}",
        mqtt_username="engine",
        mqtt_password=MQTT_PW,
        redis=f"redis://:{REDIS_PW}@127.0.0.1:{_closed_port()}/0",
        orders=str(orders),
        http_port=0,
        api_tokens_file=str(tokens),
        log_level="INFO",
    )
    task = asyncio.create_task(serve.run_serve(cfg))
    seen = ""
    try:
        for _ in range(200):  # the start-up line, then the store failing to connect
            await asyncio.sleep(0.05)
            seen += capsys.readouterr().err
            if "emguard serving" in seen and "state store unavailable" in seen:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        seen += capsys.readouterr().err
    assert "emguard serving" in seen and "state store unavailable" in seen, seen
    assert "mqtt://engine:***@127.0.0.1" in seen and "redis://:***@127.0.0.1" in seen
    for secret in (REDIS_PW, MQTT_PW, TOKEN):
        assert secret not in seen
    assert MQTT_PW not in repr(cfg) and REDIS_PW not in repr(cfg)


def test_serve_exit_message_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fatal error naming the Redis URL is printed by the CLI with the password masked."""
    from click.testing import CliRunner

    from engine.errors import ConfigError
    from engine.tools.cli import main

    async def failing(cfg: ServiceConfig) -> None:
        raise ConfigError(f"task committer failed: redis redis://:{REDIS_PW}@redis:6379/0: down")

    monkeypatch.setattr(serve, "run_serve", failing)
    result = CliRunner().invoke(main, ["serve", "--insecure-no-auth"])
    assert result.exit_code != 0 and "redis://:***@redis:6379/0" in result.output
    assert REDIS_PW not in result.output
