"""``emguard serve`` secure by default: no open API without saying so, tokens, HTTPS (issue 21)."""

from __future__ import annotations

import datetime
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from engine.core.config import ServiceConfig
from engine.core.testing import orders_doc
from engine.errors import ConfigError
from engine.tools import serve
from engine.tools.cli import main
from engine.web import auth
from engine.web.auth import Authenticator, Principal, load_tokens, tokens_from_env
from engine.web.edge import SECURITY_HEADERS
from engine.web.server import HttpServer
from tests.engine.api_support import make_world

TOKEN = "sup-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_tokens_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EMGUARD_API_TOKENS", "EMGUARD_API_TOKENS_FILE", "EMGUARD_INSECURE_NO_AUTH"):
        monkeypatch.delenv(var, raising=False)


async def test_serve_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    """No token and no --insecure-no-auth: a ConfigError saying what to set, before anything runs."""
    cfg = ServiceConfig(orders=str(tmp_path / "missing-orders.json"))
    with pytest.raises(ConfigError, match=r"EMGUARD_API_TOKENS_FILE.*--insecure-no-auth"):
        await serve.run_serve(cfg)


def test_serve_cli_refuses_without_tokens_and_the_flag_lifts_it(tmp_path: Path) -> None:
    """The command line says what to set; with --insecure-no-auth it gets past the check."""
    missing = str(tmp_path / "missing-orders.json")
    refused = CliRunner().invoke(main, ["serve", "--orders", missing])
    assert refused.exit_code != 0 and "--insecure-no-auth" in refused.output
    assert "EMGUARD_API_TOKENS" in refused.output
    allowed = CliRunner().invoke(main, ["serve", "--orders", missing, "--insecure-no-auth"])
    assert allowed.exit_code != 0 and "cannot read orders file" in allowed.output
    by_env = CliRunner().invoke(
        main, ["serve", "--orders", missing], env={"EMGUARD_INSECURE_NO_AUTH": "1"}
    )
    assert "cannot read orders file" in by_env.output


def test_tokens_come_from_env_and_from_a_secret_file(tmp_path: Path) -> None:
    """EMGUARD_API_TOKENS_FILE holds token:name:role lines (comments allowed), merged with the env."""
    secret = tmp_path / "tokens"
    secret.write_text(f"# operators\n{TOKEN}:sue:supervisor\n{'r' * 20}:rita:read-only\n")
    env = {
        "EMGUARD_API_TOKENS": f"{'o' * 20}:oscar:operator",
        "EMGUARD_API_TOKENS_FILE": str(secret),
    }
    assert tokens_from_env(env) == {
        "o" * 20: Principal("oscar", "operator"),
        TOKEN: Principal("sue", "supervisor"),
        "r" * 20: Principal("rita", "read-only"),
    }
    cfg = ServiceConfig.from_env({"EMGUARD_API_TOKENS_FILE": str(secret)})
    assert serve.api_tokens(cfg) == load_tokens(None, str(secret))
    with pytest.raises(ConfigError, match="cannot read EMGUARD_API_TOKENS_FILE"):
        load_tokens(None, str(tmp_path / "nope"))
    secret.write_text(f"{TOKEN}:other:operator\n")
    with pytest.raises(ConfigError, match="also configured"):
        load_tokens(f"{TOKEN}:sue:supervisor", str(secret))


def test_token_errors_never_quote_the_token() -> None:
    """A malformed entry is reported without its secret."""
    for text in (f"{TOKEN}:sue", f"{TOKEN}:sue:root", "tiny1:sue:operator"):
        with pytest.raises(ConfigError) as info:
            auth.parse_tokens(text)
        assert TOKEN not in str(info.value) and "tiny1" not in str(info.value)


def test_insecure_flag_parses_yes_and_no() -> None:
    """EMGUARD_INSECURE_NO_AUTH is 1/0 (true/false, yes/no); anything else fails at start-up."""
    assert ServiceConfig.from_env({"EMGUARD_INSECURE_NO_AUTH": "1"}).insecure_no_auth is True
    assert ServiceConfig.from_env({"EMGUARD_INSECURE_NO_AUTH": "false"}).insecure_no_auth is False
    assert ServiceConfig.from_env({}).insecure_no_auth is False
    with pytest.raises(ConfigError, match="EMGUARD_INSECURE_NO_AUTH"):
        ServiceConfig.from_env({"EMGUARD_INSECURE_NO_AUTH": "maybe"})


def test_tokens_are_compared_in_constant_time_against_every_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """identify() runs hmac.compare_digest over all tokens, hit or miss, and keeps no token map."""
    tokens = {f"{c * 20}": Principal(c, "operator") for c in "abc"}
    authn = Authenticator(tokens)
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert authn.identify("Bearer " + "a" * 20) == Principal("a", "operator")
    assert len(calls) == 3
    assert authn.identify("Bearer " + "z" * 20) is None
    assert len(calls) == 6
    assert {len(a) for a, _ in calls} == {32}  # digests: the length of a guess does not show
    assert not any(t in repr(vars(authn)) for t in tokens)  # no dict keyed by the secret


def test_non_ascii_token_is_a_plain_401_not_an_error() -> None:
    """A header with characters compare_digest would refuse as str is just an unknown token."""
    assert Authenticator({TOKEN: Principal("sue", "supervisor")}).identify("Bearer Ünïcødé") is None


async def test_open_api_off_loopback_is_refused_unless_insecure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No tokens on 0.0.0.0: ConfigError; with insecure_no_auth it starts and warns loudly."""
    w = make_world()
    server = HttpServer(w.service, host="0.0.0.0", port=0, tokens={})
    with pytest.raises(ConfigError, match="without tokens"):
        await server.start()
    server = HttpServer(w.service, host="0.0.0.0", port=0, tokens={}, insecure_no_auth=True)
    with caplog.at_level(logging.WARNING, logger="engine.web.server"):
        await server.start()
    try:
        assert any("INSECURE" in r.getMessage() for r in caplog.records)
    finally:
        await server.stop()


async def test_serve_with_insecure_flag_gets_past_the_check(tmp_path: Path) -> None:
    """--insecure-no-auth is the only way to an open API; the next check (orders) then runs."""
    cfg = ServiceConfig(orders=str(tmp_path / "missing.json"), insecure_no_auth=True)
    with pytest.raises(ConfigError, match="cannot read orders file"):
        await serve.run_serve(cfg)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_a_certificate_and_key(tmp_path: Path) -> None:
    """EMGUARD_HTTP_TLS_CERT/KEY: the API answers over TLS, with the security headers, SSE too."""
    cert, key = _self_signed(tmp_path)
    w = make_world(tokens={TOKEN: Principal("sue", "supervisor")})
    server = HttpServer(
        w.service,
        port=0,
        tokens={TOKEN: Principal("sue", "supervisor")},
        tls_cert=str(cert),
        tls_key=str(key),
    )
    await server.start()
    try:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, verify=context, headers=headers) as c:
            r = await c.get("/api/alerts")
            assert r.status_code == 200
            async with c.stream("GET", "/api/stream") as s:
                assert s.headers["content-type"].startswith("text/event-stream")
                for name, value in SECURITY_HEADERS.items():
                    assert s.headers[name] == value
        async with httpx.AsyncClient(base_url=server.url, verify=True) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/healthz")
    finally:
        await server.stop()


async def test_bad_tls_files_are_a_config_error(tmp_path: Path) -> None:
    """A missing key file or only half the pair fails at start-up, naming the settings."""
    cert, _ = _self_signed(tmp_path)
    w = make_world()
    server = HttpServer(
        w.service, port=0, tokens={}, tls_cert=str(cert), tls_key=str(tmp_path / "no.pem")
    )
    with pytest.raises(ConfigError, match="EMGUARD_HTTP_TLS_CERT/KEY"):
        await server.start()
    cfg = ServiceConfig.from_env({"EMGUARD_HTTP_TLS_CERT": str(cert)})  # alone: read, then refused
    with pytest.raises(ConfigError, match="both"):
        HttpServer(w.service, tls_cert=cfg.http_tls_cert, tls_key=cfg.http_tls_key)


async def test_real_server_answers_413_to_huge_bodies_and_stays_up() -> None:
    """Over uvicorn, a 20 MB note and an endless chunked body get 413; the server keeps serving."""
    w = make_world()
    aid = w.raise_exclusion()
    history = len(w.engine.alerts.alerts[aid].history)
    w.server.port = 0
    await w.server.start()

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(2000):
            yield b"n" * 16384

    try:
        async with httpx.AsyncClient(base_url=w.server.url, timeout=10) as c:
            r = await c.post(f"/api/alerts/{aid}/ack", json={"note": "n" * 20_000_000})
            assert r.status_code == 413
            r = await c.post(
                f"/api/alerts/{aid}/ack",
                content=endless(),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 413
            assert (await c.get("/healthz")).status_code == 200
    finally:
        await w.server.stop()
    assert len(w.engine.alerts.alerts[aid].history) == history


async def test_demo_serves_its_open_console_on_loopback_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """emguard demo keeps its no-token console, bound to 127.0.0.1 and nothing else."""
    import io

    import engine.web.server
    from engine.tools.demo import _start_http

    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, service: object, **kwargs: object) -> None:
            seen.update(kwargs)

        async def start(self) -> None:
            pass

    monkeypatch.setattr(engine.web.server, "HttpServer", Recorder)
    await _start_http(make_world().service, 8080, io.StringIO(), {})
    assert seen["host"] == "127.0.0.1" and not seen.get("insecure_no_auth")


async def test_serve_gives_the_api_the_orders_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --orders` hands the parsed document to the HTTP server, so orders can be edited
    through the API (issue 24: without it every PUT was a 409)."""
    import engine.web.server

    path = tmp_path / "orders.json"
    path.write_text(json.dumps(orders_doc()))
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    class FakeServer:
        def __init__(self, service: object, **kw: Any) -> None:
            seen.update(kw)

        async def start(self) -> None:
            raise Stop

    monkeypatch.setattr(engine.web.server, "HttpServer", FakeServer)
    monkeypatch.setattr(serve, "freeze_loaded_state", lambda: None)
    monkeypatch.setattr(serve, "FreezeAfterFullPass", lambda: type("N", (), {"install": lambda s: None})())
    monkeypatch.setattr(serve, "use_json_logs", lambda level: None)
    cfg = ServiceConfig(orders=str(path), insecure_no_auth=True)
    with pytest.raises(Stop):
        await serve.run_serve(cfg)
    assert seen["orders_doc"] == orders_doc()
