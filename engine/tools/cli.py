"""The one console entry point, ``emguard`` (contract §8)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from engine.errors import EngineError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="WARNING", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """emguard: electronic monitoring and victim protection engine."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from engine.redact import install

    for handler in logging.getLogger().handlers:  # no password or token in any log line
        install(handler)


@main.command()
@click.option("--once", is_flag=True, help="Stop after the scenario has played (for scripts and tests).")
@click.option("--http-port", default=8080, show_default=True, help="Operator console port (0: off).")
@click.option("--broker", type=click.Choice(["auto", "mosquitto", "amqtt"]), default="auto", show_default=True,
              help="Embedded broker: mosquitto when on PATH, else amqtt (MQTT 3.1.1).")
@click.option("--speed", default=4.0, show_default=True,
              help="Device time runs this many times faster than the wall clock (the car drives at 90 km/h).")
def demo(once: bool, http_port: int, broker: str, speed: float) -> None:
    """Run the engine on embedded defaults with a built-in scenario; prints alerts as they happen."""
    from engine.tools.demo import run_demo

    try:
        asyncio.run(run_demo(once=once, http_port=http_port, broker=broker, speed=speed))
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--broker", default=None, help="mqtt://host:1883 or mqtts://host:8883 [EMGUARD_BROKER]")
@click.option("--redis", "redis_url", default=None, help="redis://host:6379/0 [EMGUARD_REDIS]")
@click.option("--orders", default=None, help="orders.json [EMGUARD_ORDERS]")
@click.option("--http-port", default=None, type=int, help="HTTP port for API, console, metrics [EMGUARD_HTTP_PORT]")
@click.option("--shared-group", default=None, help="MQTT v5 shared subscription group [EMGUARD_SHARED_GROUP]")
@click.option("--evidence-log", default=None, help="hash-chained evidence log, one per worker [EMGUARD_EVIDENCE_LOG]")
@click.option("--config", "config_file", default=None,
              help="TOML with [rules] thresholds and [deadlines] reaction times [EMGUARD_CONFIG]")
@click.option("--api-tokens-file", default=None,
              help="file of token:name:role lines for the HTTP API [EMGUARD_API_TOKENS_FILE]")
@click.option("--insecure-no-auth", is_flag=True, default=None,
              help="run the HTTP API with NO authentication (trusted networks only) [EMGUARD_INSECURE_NO_AUTH=1]")
@click.option("--transport", type=click.Choice(["mqtt", "nats"]), default=None,
              help="mqtt: one process on mosquitto + Redis; nats: a worker of the NATS JetStream "
                   "scale-out (default nats when EMGUARD_NATS_URL is set; docs/nats.md)")
def serve(broker: str | None, redis_url: str | None, orders: str | None, http_port: int | None,
          shared_group: str | None, evidence_log: str | None, config_file: str | None,
          api_tokens_file: str | None, insecure_no_auth: bool | None, transport: str | None) -> None:
    """Run the production service (config from flags, EMGUARD_* environment).

    The HTTP API needs tokens (EMGUARD_API_TOKENS_FILE or EMGUARD_API_TOKENS); without them
    the service refuses to start unless --insecure-no-auth says otherwise.
    """
    import os

    if transport == "nats" or (transport is None and os.environ.get("EMGUARD_NATS_URL")):
        from engine.core.config import ServiceConfig
        from engine.runtime.nats_jetstream import NatsSettings
        from engine.tools.serve_nats import run_serve_nats

        env = dict(os.environ)
        for var, value in (("EMGUARD_REDIS", redis_url), ("EMGUARD_ORDERS", orders), ("EMGUARD_CONFIG", config_file)):
            if value:
                env[var] = value
        try:
            # the HTTP API's settings (port, tokens, TLS) as for the single-node serve
            http = ServiceConfig.from_env(env, orders=env.get("EMGUARD_ORDERS"), http_port=http_port,
                                          api_tokens_file=api_tokens_file, insecure_no_auth=insecure_no_auth or None)
            asyncio.run(run_serve_nats(NatsSettings.from_env(env), http))
        except EngineError as exc:
            from engine.redact import redact_text

            raise click.ClickException(redact_text(str(exc))) from exc
        except KeyboardInterrupt:
            pass
        return
    from engine.core.config import ServiceConfig
    from engine.tools.serve import run_serve

    try:
        cfg = ServiceConfig.from_env(broker=broker, redis=redis_url, orders=orders, http_port=http_port,
                                     shared_group=shared_group, evidence_log=evidence_log,
                                     config=config_file, api_tokens_file=api_tokens_file,
                                     insecure_no_auth=insecure_no_auth or None)
        asyncio.run(run_serve(cfg))
    except EngineError as exc:  # the exit message lands in the same log stream: mask secrets
        from engine.redact import redact_text

        raise click.ClickException(redact_text(str(exc))) from exc
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("trace", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--orders", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--evidence", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the hash-chained evidence log (JSON Lines) of this replay.")
def replay(trace: Path, orders: Path, out: Path, evidence: Path | None) -> None:
    """Replay a trace in-process, in device time; same alerts every run."""
    from engine.runtime.replay import replay_trace, write_alerts

    try:
        alerts = replay_trace(trace, orders, evidence_path=evidence)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    write_alerts(alerts, out)
    click.echo(f"{len(alerts)} alert state changes written to {out}", err=True)


@main.group()
def deploy() -> None:
    """Generate deployment files (broker credentials and ACLs)."""


@deploy.command("nats")
@click.option("--orders", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--registry", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--rotate", is_flag=True, help="issue new passwords for every login")
def deploy_nats(orders: Path, out: Path, registry: Path | None, rotate: bool) -> None:
    """NATS logins with per-device subject permissions (accounts.conf), from the orders."""
    from engine.tools.deploy_nats import main_nats

    sys.exit(main_nats(orders, out, registry, rotate=rotate))


@deploy.command("mosquitto")
@click.option("--orders", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--registry", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--tls-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--port", "listener_port", type=int, default=8883, show_default=True)
@click.option("--config-dir", default=None, help="passwd/acl path as the broker sees it, e.g. /mosquitto/config")
@click.option("--certs-dir", default=None, help="certificate dir as the broker sees it, e.g. /mosquitto/certs")
@click.option("--data-dir", default=None, help="persistence dir as the broker sees it, e.g. /mosquitto/data")
@click.option("--rotate", is_flag=True, help="issue new passwords for every account")
def deploy_mosquitto(orders: Path, out: Path, registry: Path | None, tls_dir: Path | None,
                     listener_port: int, config_dir: str | None, certs_dir: str | None,
                     data_dir: str | None, rotate: bool) -> None:
    """Per-device credentials (mosquitto_passwd format), topic ACLs and broker config from the orders."""
    from engine.tools.deploy_mosquitto import main_mosquitto

    sys.exit(main_mosquitto(orders, out, registry, tls_dir, listener_port=listener_port,
                            config_dir=config_dir, data_dir=data_dir, certs_dir=certs_dir, rotate=rotate))


def _add_commands() -> None:
    """Commands defined next to the code they drive (orders check, simulator tools)."""
    from engine.evidence.cli import evidence_group
    from engine.tools.orders_check import orders_group
    from simulator.cli_commands import COMMANDS

    main.add_command(orders_group)
    main.add_command(evidence_group)
    for command in COMMANDS:
        main.add_command(command)


_add_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
