"""Configuration: rule thresholds (pure engine) and service settings (environment).

Defaults follow the field: a victim is warned at ``alarm`` (two-tier response,
``warning`` goes to the centre only), a boundary needs two consecutive
``possible`` fixes before it counts, and levels fall only after a dwell.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engine.core.alert_records import (
    DEFAULT_DEADLINES,
    DEFAULT_SCRIPTS,
    DEFAULT_TARGETS,
    KINDS,
    LEVELS,
    AlertPolicy,
)
from engine.errors import ConfigError
from engine.redact import MASK, redact_url


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """Thresholds of the rules; every field is in SI units (metres, seconds, m/s)."""

    reorder_quiet_s: float = 0.5  # a device's pending fixes are evaluated once it is quiet this long
    reorder_max_hold_s: float = 2.0  # ... or at most this long after the first pending arrival
    late_after_s: float = 60.0  # a fix evaluated this long after its device time is "late"
    # a late upload (buffered fixes, or a live fix whose seq skips a buffered stretch) waits
    # until its device's sequence has no gap, or the device is quiet this long, or at most
    # this long after its first arrival: a burst delivered shuffled over several messages is
    # then evaluated once, in device-time order (engine.core.tracks)
    late_quiet_s: float = 30.0
    late_max_hold_s: float = 60.0
    max_speed_mps: float = 70.0  # implied speed above this (beyond both accuracies) is a jump
    jump_accept_after: int = 3  # consecutive "jumps" that agree with each other are accepted
    max_decision_acc_m: float = 2500.0  # fixes less accurate than this are evidence only
    confirm_fixes: int = 2  # consecutive fixes inside (any certainty) needed for a zone alarm
    clear_needed: int = 2  # consecutive clearly-outside fixes needed to resolve
    zone_hysteresis_m: float = 25.0  # margin beyond the accuracy radius needed to count as left
    curfew_grace_s: float = 300.0  # outside an active inclusion zone for this long -> alert
    curfew_precise_acc_m: float = 50.0  # 'likely outside' counts for a curfew only this accurate
    proximity_hysteresis_frac: float = 0.1  # resolve only beyond warn_m * (1 + frac)
    level_fall_dwell_s: float = 120.0  # a proximity level falls only after this long lower
    level_hysteresis_m: float = 50.0  # a level falls only this far plus both accuracy radii past it
    confirm_slack_m: float = 50.0  # an uncertain rise to alarm on radii summing more needs 2 readings
    partner_max_extrapolation_s: float = 120.0  # predict the partner's position at most this far
    partner_stale_s: float = 300.0  # a partner silent this long is stale (device_silent)
    victim_warn_level: str = "alarm"  # level at which the victim device is warned
    fast_approach_ttc_s: float = 300.0  # within warn_m and contact this soon -> alarm
    non_gnss_alert_s: float = 1800.0  # only coarse positions this long -> signal_loss info
    coarse_fix_m: float = 500.0  # a non-GNSS fix coarser than this cannot support decisions
    battery_low_pct: int = 15
    battery_ok_pct: int = 30
    expiry_warn_days: tuple[float, float] = (14.0, 3.0)  # warning, then alarm
    pursuit_interval_s: int = 15  # fix interval commanded while risk is high
    normal_interval_s: int = 60
    pursuit_level: str = "warning"  # proximity level that starts pursuit mode (her device)
    # the offender's device is never put in pursuit by her distance (that would tell him she is
    # near): it gets pursuit periods at random instead, one chance per slot, seeded by subject
    # and slot (engine.core.rules.proximity.cover_window), and from its zones
    pursuit_cover_slot_s: float = 3600.0
    pursuit_cover_p: float = 0.5  # chance of a pursuit period in a slot
    pursuit_cover_s: float = 900.0  # length of a pursuit period
    forewarn_m: float = 200.0  # tell the ankle monitor 'approaching_zone' this far out
    victim_retention_s: float = 6 * 3600.0  # protected persons' positions are forgotten after this
    corridors_enabled: bool = True  # approved corridors / time windows cap alerts at info
    corridor_max_acc_m: float = 100.0  # a fix must be at least this accurate to count as in a corridor
    corridor_stop_radius_m: float = 50.0  # moving less than this (+ accuracies) for max_dwell_s = stopped
    sparse_crossing_enabled: bool = True  # check the path between consecutive fixes, not only fixes
    sparse_max_gap_s: float = 180.0  # no straight-line path is assumed across a longer gap
    gap_report_s: float = 300.0  # buffered fixes arriving after a longer reception gap -> gap record


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything the pure engine needs besides the orders."""

    prefix: str = "em"
    crs: str = "EPSG:28992"
    rules: RuleConfig = field(default_factory=RuleConfig)
    deadlines: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    kind_deadlines: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    max_future_s: float = 300.0
    alert_policy: AlertPolicy = field(default_factory=AlertPolicy)


def load_engine_config(path: str | Path, prefix: str = "em") -> EngineConfig:
    """Rule thresholds and deadlines from a TOML file (``EMGUARD_CONFIG``).

    ``[rules]`` takes any ``RuleConfig`` field; ``[deadlines]`` seconds per level (the chain
    partners' agreed reaction times), ``[deadlines.kind.<kind>]`` per kind and level;
    ``[alerts]`` how the centre works them (``auto_close``: kinds whose info/warning alerts close
    themselves when cleared, ``outcomes``: the close codes, ``[alerts.targets]``: escalation
    targets per kind, ``"*"`` for the rest).  A key we do not know or a value of the wrong type
    fails at start-up, naming it.
    """
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    unknown = set(doc) - {"rules", "deadlines", "crs", "max_future_s", "alerts"}
    if unknown:
        raise ConfigError(f"config {path}: unknown section(s) {sorted(unknown)}")
    defaults = RuleConfig()
    rules_in = doc.get("rules", {})
    known = {f.name: getattr(defaults, f.name) for f in fields(RuleConfig)}
    for key, value in rules_in.items():
        if key not in known:
            raise ConfigError(f"config {path}: unknown rule setting [rules].{key}")
        want = type(known[key])
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if isinstance(value, bool) != isinstance(known[key], bool) or not ok:
            raise ConfigError(f"config {path}: [rules].{key} must be {want.__name__}")
    overrides: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in rules_in.items()}
    rules = replace(defaults, **overrides)
    deadlines = dict(DEFAULT_DEADLINES)
    kind_deadlines: dict[str, dict[str, float]] = {}
    for key, value in doc.get("deadlines", {}).items():
        if key == "kind":
            for kind, levels in value.items():
                if kind not in KINDS:
                    raise ConfigError(f"config {path}: unknown alert kind [deadlines.kind.{kind}]")
                kind_deadlines[kind] = {lvl: _seconds(path, f"kind.{kind}.{lvl}", s) for lvl, s in levels.items()}
        else:
            deadlines[key] = _seconds(path, key, value)
    bad = {lvl for lv in [deadlines, *kind_deadlines.values()] for lvl in lv} - set(LEVELS)
    if bad:
        raise ConfigError(f"config {path}: unknown level(s) in [deadlines]: {sorted(bad)}")
    return EngineConfig(
        prefix=prefix,
        crs=str(doc.get("crs", "EPSG:28992")),
        rules=rules,
        deadlines=deadlines,
        kind_deadlines=kind_deadlines,
        max_future_s=float(doc.get("max_future_s", 300.0)),
        alert_policy=_alert_policy(path, doc.get("alerts", {})),
    )


def _alert_policy(path: str | Path, section: Any) -> AlertPolicy:
    """``[alerts]``: what closes itself, the outcome codes, escalation targets and call scripts per kind."""
    if not isinstance(section, dict):
        raise ConfigError(f"config {path}: [alerts] must be a table")
    unknown = set(section) - {"auto_close", "outcomes", "targets", "scripts"}
    if unknown:
        raise ConfigError(f"config {path}: unknown setting(s) [alerts].{sorted(unknown)}")
    default = AlertPolicy()
    auto_close = _names(path, "auto_close", section.get("auto_close", sorted(default.auto_close)))
    bad = set(auto_close) - set(KINDS)
    if bad:
        raise ConfigError(f"config {path}: [alerts].auto_close names unknown kind(s) {sorted(bad)}")
    outcomes = _names(path, "outcomes", section.get("outcomes", list(default.outcomes)))
    if not outcomes:
        raise ConfigError(f"config {path}: [alerts].outcomes must list at least one outcome code")
    return AlertPolicy(
        frozenset(auto_close),
        outcomes,
        _per_kind(path, section, "targets", DEFAULT_TARGETS, "name a target"),
        _per_kind(path, section, "scripts", DEFAULT_SCRIPTS, "have a line"),
    )


def _per_kind(
    path: str | Path, section: dict[str, Any], key: str,
    defaults: Mapping[str, tuple[str, ...]], needs: str,
) -> dict[str, tuple[str, ...]]:
    """``[alerts.<key>]``: kind (or ``*``) = [names], over the defaults of every other kind."""
    found: dict[str, tuple[str, ...]] = dict(defaults)
    given = section.get(key, {})
    if not isinstance(given, dict):
        raise ConfigError(f"config {path}: [alerts.{key}] must be a table of kind = [{key}]")
    for kind, names in given.items():
        if kind != "*" and kind not in KINDS:
            raise ConfigError(f"config {path}: unknown alert kind [alerts.{key}].{kind}")
        listed = _names(path, f"{key}.{kind}", names)
        if not listed:
            raise ConfigError(f"config {path}: [alerts.{key}].{kind} must {needs}")
        found[kind] = listed
    return found


def _names(path: str | Path, key: str, value: object) -> tuple[str, ...]:
    """A TOML list of non-empty strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"config {path}: [alerts].{key} must be a list of names")
    return tuple(str(v) for v in value)


def _seconds(path: str | Path, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"config {path}: [deadlines].{key} must be a positive number of seconds")
    return float(value)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Settings of ``emguard serve``; every field has an EMGUARD_* environment variable."""

    broker: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    # the publishing connection's own login: a broker that binds each login to its client id
    # (deploy: use_username_as_clientid) needs one per connection; default <username>-pub with
    # the same password
    mqtt_publish_username: str | None = None
    mqtt_publish_password: str | None = None
    mqtt_ca: str | None = None
    redis: str | None = None
    orders: str | None = None
    topic_prefix: str = "em"
    shared_group: str = ""
    http_port: int = 8080
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    client_id: str = "emguard-engine"
    queue_size: int = 10_000
    evidence_log: str | None = None
    config: str | None = None  # TOML with [rules] and [deadlines] (load_engine_config)
    # HTTP API access (engine/web/auth.py): `serve` refuses to start with neither tokens nor the
    # explicit insecure switch, so a forgotten secret cannot leave the API open to anyone
    api_tokens: str | None = None  # token:name:role,... (prefer the file: env leaks to /proc)
    api_tokens_file: str | None = None  # the same entries in a mounted secret file
    insecure_no_auth: bool = False  # everyone acts as demo-operator; trusted networks only
    http_tls_cert: str | None = None  # PEM certificate (chain): the API speaks HTTPS itself
    http_tls_key: str | None = None  # its PEM private key

    def __repr__(self) -> str:
        """Every field, with passwords, tokens and URL passwords masked (safe to log)."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value:
                value = MASK
            elif f.name in _URL_FIELDS and isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"ServiceConfig({', '.join(shown)})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServiceConfig:
        """Read EMGUARD_* variables; explicit overrides (CLI flags) win when not None."""
        env = os.environ if env is None else env
        retired = [v for v in _RETIRED if env.get(v)]
        if retired:
            raise ConfigError(
                f"{', '.join(retired)} no longer exist(s): the static worker hash and its forwarding "
                "are gone. Run one `emguard serve` on MQTT, or scale out on NATS JetStream with "
                "`emguard serve --transport nats` (EMGUARD_NATS_URL; docs/nats.md)"
            )
        values: dict[str, object] = {}
        for name, var in _ENV.items():
            if var in env and env[var] != "":
                values[name] = env[var]
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        try:
            if "http_port" in values:
                values["http_port"] = int(str(values["http_port"]))
            for name in ("queue_size",):
                if name in values:
                    values[name] = int(str(values[name]))
        except ValueError as exc:
            raise ConfigError(f"EMGUARD_HTTP_PORT / queue size must be an integer: {exc}") from exc
        if "insecure_no_auth" in values:
            values["insecure_no_auth"] = _flag("EMGUARD_INSECURE_NO_AUTH", values["insecure_no_auth"])
        cfg = cls(**values)  # type: ignore[arg-type]
        if not cfg.broker.startswith(("mqtt://", "mqtts://")):
            raise ConfigError(
                f"broker must look like mqtt://host:port or mqtts://host:port, got {redact_url(cfg.broker)!r}"
            )
        return cfg  # a half TLS pair is refused where it is used (engine.web.server.HttpServer)


def _flag(var: str, value: object) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off; anything else fails at start-up."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{var} must be 1 or 0, got {value!r}")


_SECRET_FIELDS = {"mqtt_password", "mqtt_publish_password", "api_tokens"}  # by name: ok if absent
_URL_FIELDS = {"broker", "redis"}


#: settings of the removed MQTT worker hash (engine/runtime/cluster.py): refused, never silently ignored
_RETIRED = ("EMGUARD_WORKERS", "EMGUARD_WORKER_INDEX")

_ENV = {
    "broker": "EMGUARD_BROKER",
    "mqtt_username": "EMGUARD_MQTT_USERNAME",
    "mqtt_password": "EMGUARD_MQTT_PASSWORD",
    "mqtt_publish_username": "EMGUARD_MQTT_PUBLISH_USERNAME",
    "mqtt_publish_password": "EMGUARD_MQTT_PUBLISH_PASSWORD",
    "mqtt_ca": "EMGUARD_MQTT_CA",
    "redis": "EMGUARD_REDIS",
    "orders": "EMGUARD_ORDERS",
    "topic_prefix": "EMGUARD_TOPIC_PREFIX",
    "shared_group": "EMGUARD_SHARED_GROUP",
    "http_port": "EMGUARD_HTTP_PORT",
    "http_host": "EMGUARD_HTTP_HOST",
    "log_level": "EMGUARD_LOG_LEVEL",
    "client_id": "EMGUARD_CLIENT_ID",
    "evidence_log": "EMGUARD_EVIDENCE_LOG",
    "config": "EMGUARD_CONFIG",
    "api_tokens": "EMGUARD_API_TOKENS",
    "api_tokens_file": "EMGUARD_API_TOKENS_FILE",
    "insecure_no_auth": "EMGUARD_INSECURE_NO_AUTH",
    "http_tls_cert": "EMGUARD_HTTP_TLS_CERT",
    "http_tls_key": "EMGUARD_HTTP_TLS_KEY",
}
