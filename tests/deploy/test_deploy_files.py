"""compose.yaml, the Kubernetes manifests and the Dockerfile, checked against each other and the engine.

Docker and a cluster are not available here, so the files are parsed and
cross-checked: mounts point at files that exist (or that the generator
writes), every EMGUARD_* variable is one the engine reads and yields a valid
service config, ports agree end to end, probes hit the engine's endpoints.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from _deploy_helpers import DEPLOY, ORDERS_DOC, REPO

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.tools.deploy_mosquitto import write_mosquitto_config

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ENGINES = {name: s for name, s in SERVICES.items() if name.startswith("engine")}
BROKER_CONF = (DEPLOY / "broker" / "mosquitto.conf").read_text()
K8S = {
    p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted((DEPLOY / "k8s").glob("*.yaml"))
}
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
ENTRYPOINT = DEPLOY / "entrypoint.sh"
# The *_FILE variables the image's entrypoint turns into their variables (deploy/entrypoint.sh).
_LOOP = re.search(r"^for var in ([A-Z_ ]+); do$", ENTRYPOINT.read_text(), re.M)
assert _LOOP, "deploy/entrypoint.sh: the 'for var in ...' loop"
ENTRYPOINT_FILE_VARS = frozenset(f"{v}_FILE" for v in _LOOP.group(1).split())

_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose-style ${VAR:-default} / ${VAR:?error} with nothing set: the default, or a stand-in."""
    return _VAR.sub(lambda m: m.group(3) if m.group(2) == "-" else f"<{m.group(1)}>", value)


def binds(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host source, container target) of every bind mount (named volumes excluded)."""
    out = []
    for spec in service.get("volumes", []):
        source, target = interpolate(spec).split(":")[:2]
        if source.startswith(("./", "../")):
            out.append((source, target))
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Paths (relative to deploy/) that `emguard deploy mosquitto --out deploy/mosquitto/` writes."""
    out = tmp_path_factory.mktemp("bundle") / "mosquitto"
    write_mosquitto_config(load_orders(ORDERS_DOC), out)
    return {f"mosquitto/{p.relative_to(out)}" for p in out.rglob("*")}


@pytest.fixture(scope="module")
def broker_logins(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every username `emguard deploy mosquitto` generates with its defaults."""
    out = tmp_path_factory.mktemp("logins") / "mosquitto"
    return {a.username for a in write_mosquitto_config(load_orders(ORDERS_DOC), out).accounts}


# README: the operator puts the TLS files into certs/ and the compose secrets into secrets/
OPERATOR_PROVIDED = {"certs", "secrets"}


def _exists_or_provided(source: str, generated: set[str]) -> bool:
    rel = source.removeprefix("./")
    if rel in generated or (DEPLOY / rel).exists():
        return True
    top = rel.split("/")[0]
    return top in OPERATOR_PROVIDED and (DEPLOY / top).is_dir()


# --------------------------------------------------------------------------- compose


def test_compose_bind_mounts_and_env_files_exist_or_are_generated(generated: set[str]) -> None:
    """Every ./path in compose.yaml is a shipped file, a generated one, or the certs directory."""
    for name, service in SERVICES.items():
        for source, _ in binds(service):
            assert _exists_or_provided(source, generated), f"{name}: {source}"
        for env_file in service.get("env_file", []):
            assert _exists_or_provided(env_file, generated), f"{name}: {env_file}"
    for name, secret in COMPOSE["secrets"].items():
        assert _exists_or_provided(secret["file"], generated), f"secret {name}: {secret['file']}"
    for directory in OPERATOR_PROVIDED:
        assert (DEPLOY / directory / ".gitignore").is_file(), directory


def test_compose_builds_the_shipped_dockerfile() -> None:
    """The engines build deploy/Dockerfile with the repository root as context."""
    for engine in ENGINES.values():
        assert (DEPLOY / engine["build"]["context"] / engine["build"]["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        ).resolve()


def is_config_key(key: str) -> bool:
    """True when engine/core/config.py reads ``key`` (setting it to a non-default value changes the config)."""
    probe = {"EMGUARD_BROKER": "mqtt://probe:1", "EMGUARD_HTTP_PORT": "1234"}.get(
        key, "probe-value"
    )
    return ServiceConfig.from_env({key: probe}) != ServiceConfig()


# Agreed in issue 21 and implemented on another branch: the HTTP engineer's engine/web/auth.py and
# engine/core/config.py read EMGUARD_API_TOKENS_FILE.  test_agreed_variables_are_read_by_the_engine
# reports (xfail) until that is merged, then checks it.
AGREED = {"EMGUARD_API_TOKENS_FILE": "engine/web/auth.py (HTTP branch of issue 21)"}


def _named_in_engine(key: str) -> bool:
    return any(f'"{key}"' in p.read_text() for p in (REPO / "engine").rglob("*.py"))


def engine_reads(key: str) -> bool:
    """True when the engine reads ``key``: its config, the image's entrypoint, or engine/ code."""
    if key in ENTRYPOINT_FILE_VARS or key in AGREED or is_config_key(key):
        return True
    return _named_in_engine(key)


@pytest.mark.parametrize("key", sorted(AGREED))
def test_agreed_variables_are_read_by_the_engine(key: str) -> None:
    """The deploy files set these; the engine must read them (else `serve` has no API tokens)."""
    if not _named_in_engine(key):
        pytest.xfail(f"{key} is read by {AGREED[key]}, not merged into this branch yet")
    assert _named_in_engine(key)


STAND_IN = {
    "EMGUARD_MQTT_PASSWORD": "from-secret",
    "EMGUARD_MQTT_PUBLISH_PASSWORD": "from-secret-pub",
    "EMGUARD_REDIS": "redis://:from-secret@redis:6379/0",
}


def _as_engine_sees(env: dict[str, str]) -> dict[str, str]:
    """The environment after the image's entrypoint read each *_FILE into its variable."""
    out = {}
    for key, value in env.items():
        if key in ENTRYPOINT_FILE_VARS:
            out[key.removesuffix("_FILE")] = STAND_IN[key.removesuffix("_FILE")]
        elif key != "EMGUARD_API_TOKENS_FILE" or is_config_key(key):
            out[key] = value
    return out


def _engine_config(service: dict[str, Any]) -> ServiceConfig:
    env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
    return ServiceConfig.from_env(_as_engine_sees(env))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_environment_is_the_engines_own_config(name: str) -> None:
    """Each EMGUARD_* key is read by engine/core/config.py, and together they make a valid service config."""
    service = ENGINES[name]
    for key in service["environment"]:
        assert key.startswith("EMGUARD_"), key
        assert engine_reads(key), f"{key} is not read by the engine or its entrypoint"
    cfg = _engine_config(service)
    assert cfg.broker == "mqtts://mosquitto:8883"
    assert cfg.shared_group == ""  # one engine: nothing to share
    assert (cfg.http_host, cfg.http_port) == ("0.0.0.0", 8080)
    targets = {target for _, target in binds(service)}
    assert cfg.orders in targets and cfg.mqtt_ca in targets
    redis = urlparse(cfg.redis or "")
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    command = service["command"]
    assert command[0] == "serve"
    assert command[command.index("--orders") + 1] == cfg.orders
    assert command[command.index("--broker") + 1] == cfg.broker


def test_one_engine_on_mosquitto_with_a_fixed_client_id() -> None:
    """One engine (two on one broker would each see half a case), its own fixed client id."""
    assert len(ENGINES) == 1
    ids = {_engine_config(s).client_id for s in ENGINES.values()}
    assert ids == {"emguard-engine-0"}
    assert kind("StatefulSet")["spec"]["replicas"] == 1
    assert not any(o["kind"] == "HorizontalPodAutoscaler" for o in k8s_objects())


def test_each_worker_logs_in_with_its_own_generated_logins(broker_logins: set[str]) -> None:
    """The broker makes the username the client id: each worker's username is its client id, and
    it and its publishing login ``<username>-pub`` (engine/runtime/service.py) are generated accounts."""
    for name, service in ENGINES.items():
        cfg = _engine_config(service)
        assert cfg.mqtt_username == cfg.client_id, name
        assert {cfg.mqtt_username, f"{cfg.mqtt_username}-pub"} <= broker_logins, name
    pods = kind("StatefulSet")["metadata"]["name"]
    for n in range(kind("StatefulSet")["spec"]["replicas"]):
        assert {f"{pods}-{n}", f"{pods}-{n}-pub"} <= broker_logins, n


def test_broker_port_agrees_end_to_end() -> None:
    """The engines' broker URL, the published port and the shipped listener are all 8883 with TLS."""
    port = urlparse(_engine_config(next(iter(ENGINES.values()))).broker).port
    assert re.search(rf"^listener {port}$", BROKER_CONF, re.M)
    assert f"{port}:{port}" in SERVICES["mosquitto"]["ports"][0]
    assert "cafile " in BROKER_CONF and "allow_anonymous false" in BROKER_CONF


def test_every_file_the_broker_config_names_is_mounted() -> None:
    """password_file, acl_file, certificates and persistence resolve to compose mounts."""
    mounts = [target for _, target in binds(SERVICES["mosquitto"])] + [
        v.split(":")[1] for v in SERVICES["mosquitto"]["volumes"] if not v.startswith("./")
    ]
    keys = ("password_file", "acl_file", "cafile", "certfile", "keyfile", "persistence_location")
    for key in keys:
        path = re.search(rf"^{key} (\S+)$", BROKER_CONF, re.M)
        assert path, key
        assert any(
            path.group(1) == m or path.group(1).startswith(m.rstrip("/") + "/") for m in mounts
        ), key
    conf_mount = [t for s, t in binds(SERVICES["mosquitto"]) if s == "./broker/mosquitto.conf"]
    assert conf_mount == [SERVICES["mosquitto"]["command"][-1]]


def test_redis_uses_aof_and_a_password_from_its_secret() -> None:
    """Redis keeps an append-only file (engine state survives restarts) and requires auth."""
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command
    assert "requirepass" in command and "/run/secrets/redis_password" in command
    assert SERVICES["redis"]["secrets"] == ["redis_password"]
    assert "/run/secrets/redis_password" in " ".join(SERVICES["redis"]["healthcheck"]["test"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
def test_redis_command_really_requires_the_secret_password(tmp_path: Path) -> None:
    """The compose command, run by sh with a real redis-server: NOAUTH without, PONG with the file's password.

    docker-entrypoint.sh is replaced by a stub that adds a free port and a private
    directory (never the machine's Redis on 6379); the password appears in no argv.
    """
    import shutil

    server = shutil.which("redis-server") or pytest.fail("redis-server is not installed")
    cli = shutil.which("redis-cli") or pytest.fail("redis-cli is not installed")
    port = _free_port()
    password = "0123456789abcdef" * 3
    (tmp_path / "redis_password").write_text(password + "\n")
    stub = tmp_path / "bin" / "docker-entrypoint.sh"
    stub.parent.mkdir()
    stub.write_text(
        f'#!/bin/sh\nshift\nexec {server} "$@" --port {port} --bind 127.0.0.1 --dir {tmp_path}\n'
    )
    stub.chmod(0o755)
    script = SERVICES["redis"]["command"][2].replace("$$", "$")
    script = script.replace("/run/secrets/redis_password", str(tmp_path / "redis_password"))
    env = dict(os.environ, PATH=f"{stub.parent}:{os.environ['PATH']}")
    log = (tmp_path / "redis.log").open("wb")
    proc = subprocess.Popen(
        ["sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        import time

        deadline = time.monotonic() + 10
        ping: subprocess.CompletedProcess[str] | None = None
        while time.monotonic() < deadline:
            ping = subprocess.run([cli, "-p", str(port), "ping"], capture_output=True, text=True)
            if ping.stdout.strip():
                break
            time.sleep(0.1)
        assert ping is not None and "NOAUTH" in ping.stdout, ping
        authed = subprocess.run(
            [cli, "-p", str(port), "ping"],
            capture_output=True,
            text=True,
            env=dict(os.environ, REDISCLI_AUTH=password),
        )
        assert authed.stdout.strip() == "PONG"
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert password.encode() not in cmdline.read_bytes(), cmdline
            except OSError:
                continue  # the process ended meanwhile
    finally:
        subprocess.run(
            [cli, "-p", str(port), "shutdown", "nosave"],
            env=dict(os.environ, REDISCLI_AUTH=password),
            capture_output=True,
        )
        with contextlib.suppress(ProcessLookupError):  # redis-server is sh's child: the group
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


def test_prometheus_scrapes_each_engine_on_its_http_port() -> None:
    """The scrape targets are exactly the engine services on EMGUARD_HTTP_PORT."""
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for c in prom["scrape_configs"] for s in c["static_configs"] for t in s["targets"]}
    assert targets == {f"{name}:{_engine_config(s).http_port}" for name, s in ENGINES.items()}
    mounted = {source for source, _ in binds(SERVICES["prometheus"])}
    assert {"./prometheus/prometheus.yml", "./prometheus/alerts.yml"} <= mounted


def test_internal_services_are_not_published_to_the_world() -> None:
    """Only TLS ports are public (broker, API proxy); Redis and engines have none, UIs bind to loopback."""
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            public = name in ("mosquitto", "api-proxy")
            assert public or str(port).startswith("127.0.0.1:"), (name, port)
    assert "ports" not in SERVICES["redis"]
    assert COMPOSE["networks"]["backend"]["internal"] is True


# --------------------------------------------------------------------------- Kubernetes


def k8s_objects() -> list[dict[str, Any]]:
    """Every object in deploy/k8s except the kustomization."""
    return [o for name, docs in K8S.items() if name != "kustomization.yaml" for o in docs if o]


def kind(name: str) -> dict[str, Any]:
    """The single object of a kind."""
    found = [o for o in k8s_objects() if o["kind"] == name]
    assert len(found) == 1, name
    return found[0]


def test_k8s_has_the_required_kinds_and_kustomize_lists_every_file() -> None:
    """Workload, autoscaler, disruption budget, network policy, config; kustomization applies all files."""
    kinds = {o["kind"] for o in k8s_objects()}
    required = {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert required | {"ConfigMap", "ServiceAccount", "Namespace"} <= kinds
    assert set(K8S["kustomization.yaml"][0]["resources"]) == set(K8S) - {"kustomization.yaml"}


def _pod() -> dict[str, Any]:
    return kind("StatefulSet")["spec"]["template"]


def _engine_container() -> dict[str, Any]:
    return next(c for c in _pod()["spec"]["containers"] if c["name"] == "engine")


def test_probes_hit_the_engines_health_endpoints_on_8080() -> None:
    """Readiness on /readyz, liveness and start-up on /healthz, all on the container's 8080."""
    container = _engine_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == 8080


def test_k8s_environment_is_valid_engine_config_with_secrets_from_secrets() -> None:
    """ConfigMap + env make a valid config; password and Redis URL come only from Secret references."""
    config_map = kind("ConfigMap")["data"]
    container = _engine_container()
    assert container["envFrom"] == [
        {"configMapRef": {"name": kind("ConfigMap")["metadata"]["name"]}}
    ]
    env = {e["name"]: e for e in container["env"]}
    for key in ("EMGUARD_MQTT_PASSWORD", "EMGUARD_MQTT_PUBLISH_PASSWORD", "EMGUARD_REDIS"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "emguard-secrets", key
        assert key not in config_map
    # username = client id = pod name: the broker binds each login to its client id
    for key in ("EMGUARD_MQTT_USERNAME", "EMGUARD_CLIENT_ID"):
        assert env[key]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", key
        assert key not in config_map
    values = dict(config_map) | {
        "EMGUARD_MQTT_USERNAME": "emguard-engine-0",
        "EMGUARD_MQTT_PASSWORD": "x",
        "EMGUARD_MQTT_PUBLISH_PASSWORD": "y",
        "EMGUARD_REDIS": "redis://r:6379/0",
    }
    for key in values:
        assert engine_reads(key), f"{key} is not read by the engine"
    cfg = ServiceConfig.from_env(_as_engine_sees(values))
    assert cfg.broker.startswith("mqtts://") and cfg.http_port == 8080 and not cfg.shared_group
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(PurePosixPath(cfg.orders or "").parent) in mounts
    assert str(PurePosixPath(cfg.mqtt_ca or "").parent) in mounts


def test_pods_run_restricted_as_the_image_user() -> None:
    """Non-root uid of the Dockerfile, read-only root, no capabilities, no service-account token."""
    spec = _pod()["spec"]
    uid = re.search(r"^USER (\d+)", DOCKERFILE, re.M)
    assert uid and spec["securityContext"]["runAsUser"] == int(uid.group(1))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_numba_cache_from_the_image_is_copied_to_a_writable_volume() -> None:
    """The init container copies the image's NUMBA_CACHE_DIR into the emptyDir the engine uses."""
    image_cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", DOCKERFILE)
    assert image_cache
    init = _pod()["spec"]["initContainers"][0]
    assert init["command"][:3] == ["cp", "-a", image_cache.group(1) + "/."]
    env = {e["name"]: e.get("value") for e in _engine_container()["env"]}
    mounts = {m["name"]: m["mountPath"] for m in _engine_container()["volumeMounts"]}
    assert env["NUMBA_CACHE_DIR"] == mounts["numba-cache"] == init["command"][3].rstrip("/")


def test_pdb_and_service_select_the_engine_pods() -> None:
    """PDB and Service select the StatefulSet's pods."""
    sts = kind("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert kind("PodDisruptionBudget")["spec"]["minAvailable"] >= 1
    for selector in (
        kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        kind("Service")["spec"]["selector"],
        sts["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert sts["spec"]["serviceName"] == kind("Service")["metadata"]["name"]


def test_network_policy_allows_only_broker_redis_dns_out_and_monitoring_in() -> None:
    """Egress to 8883, 6379 and DNS only; ingress only to 8080 from the monitoring namespace."""
    policy = kind("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= _pod()["metadata"]["labels"].items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    monitoring, controller = policy["ingress"]
    for rule in (monitoring, controller):
        assert [p["port"] for p in rule["ports"]] == [8080]
    assert monitoring["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert controller["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {8883, 6379, 53}


# --------------------------------------------------------------------------- Dockerfile


def _stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    """A build stage, then a runtime that runs as a numeric non-root user and checks /healthz."""
    stages = _stages()
    assert len(stages) >= 2
    runtime = stages[-1]
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*", runtime, re.M) and "/healthz" in runtime
    assert re.search(r"^EXPOSE 8080$", runtime, re.M)
    assert 'ENTRYPOINT ["emguard-entrypoint"]' in runtime
    assert "COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/emguard-entrypoint" in runtime
    assert "import geo.kernels" in runtime and "warmup.py" in runtime


def test_dockerfile_copies_only_files_that_exist_and_are_not_dockerignored() -> None:
    """Every COPY source exists in the repository and is re-included by Dockerfile.dockerignore."""
    allowed = [
        ln[1:].rstrip("/")
        for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.startswith("!")
    ]
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M):
        parts = shlex.split(line)
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), source
            source = source.rstrip("/")
            assert any(source == a or source.startswith(a + "/") for a in allowed), source


def test_warmup_inputs_are_valid_orders_and_trace() -> None:
    """The build-time warm-up replays a contract §7 trace against orders that load."""
    import json

    book = load_orders(DEPLOY / "orders.example.json")
    assert book.owntracks == {"anna/phone": "VP-3001"}
    lines = [json.loads(ln) for ln in (DEPLOY / "warmup" / "trace.jsonl").read_text().splitlines()]
    assert lines and all(set(ln) == {"arrival", "topic", "payload"} for ln in lines)
    assert [ln["arrival"] for ln in lines] == sorted(ln["arrival"] for ln in lines)


def test_dev_secrets_directories_are_git_ignored() -> None:
    """Generated passwords and TLS keys cannot be committed by accident."""
    for directory in ("mosquitto", "certs", "secrets"):
        rules = (DEPLOY / directory / ".gitignore").read_text().splitlines()
        assert "*" in rules and "!.gitignore" in rules


def test_readme_documents_every_broker_setting() -> None:
    """deploy/README.md explains each broker setting the generator writes."""
    from engine.tools.deploy_mosquitto import BROKER_SETTINGS

    readme = (DEPLOY / "README.md").read_text()
    for setting in BROKER_SETTINGS:
        assert f"`{setting.key}`" in readme, setting.key


# --------------------------------------------------------------------------- secrets (issue 21)

_SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|CREDENTIAL|_KEY$|REDIS$")


def _env_items() -> list[tuple[str, str, Any]]:
    """(where, name, value) of every environment entry in compose and the Kubernetes manifests."""
    items: list[tuple[str, str, Any]] = []
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        pairs = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        items += [(f"compose {name}", k, v) for k, v in pairs]
    for obj in k8s_objects():
        if obj["kind"] == "ConfigMap":
            items += [
                (f"ConfigMap {obj['metadata']['name']}", k, v) for k, v in obj["data"].items()
            ]
        if obj["kind"] == "StatefulSet":
            spec = obj["spec"]["template"]["spec"]
            for c in spec["containers"] + spec.get("initContainers", []):
                items += [(f"container {c['name']}", e["name"], e) for e in c.get("env", [])]
    return items


def test_no_literal_secret_in_compose_or_kubernetes_environments() -> None:
    """A secret-named variable is a *_FILE path under a secret mount or a secretKeyRef, never a
    value: not written out, not ${INTERPOLATED} from the shell, not a URL with a password."""
    checked = 0
    for where, name, value in _env_items():
        if isinstance(value, dict):  # Kubernetes env entry
            if _SECRETISH.search(name):
                assert "value" not in value, f"{where}: {name} has a literal value"
                assert "secretKeyRef" in value.get("valueFrom", {}), f"{where}: {name}"
                checked += 1
            continue
        text = str(value)
        assert "${" not in text or not _SECRETISH.search(text), f"{where}: {name}={text}"
        assert not re.search(r"://[^/@\s]*:[^/@\s]+@", text), f"{where}: {name} has a URL password"
        if _SECRETISH.search(name.removesuffix("__FILE").removesuffix("_FILE")):
            assert name.endswith("_FILE"), f"{where}: {name} is set to a value, not a file"
            assert text.startswith(("/run/secrets/", "/etc/emguard/api/")), f"{where}: {name}"
            checked += 1
    assert checked >= 8
    raw = (DEPLOY / "compose.yaml").read_text() + "".join(
        p.read_text() for p in (DEPLOY / "k8s").glob("*.yaml")
    )
    assert "REDIS_PASSWORD}" not in raw and "--requirepass" not in raw


def test_compose_file_secrets_are_mounted_where_the_variables_point() -> None:
    """Every /run/secrets/<name> a service names is one of the secrets that service lists."""
    for name, service in SERVICES.items():
        listed = set(service.get("secrets", []))
        assert listed <= set(COMPOSE["secrets"]), name
        text = yaml.safe_dump(service)
        for secret in re.findall(r"/run/secrets/(\w+)", text):
            assert secret in listed, f"{name} reads /run/secrets/{secret} without listing it"


@pytest.mark.parametrize(("variable", "secret"), [("EMGUARD_API_TOKENS", "api_tokens"),
                                                   ("EMGUARD_DEVICE_TOKENS", "device_tokens")])
def test_api_and_device_tokens_come_from_a_secret_file(variable: str, secret: str) -> None:
    """compose: EMGUARD_*_TOKENS_FILE is its secret; Kubernetes: a file of a Secret volume."""
    for name, service in ENGINES.items():
        env = service["environment"]
        assert variable not in env, name
        assert env[f"{variable}_FILE"] == f"/run/secrets/{secret}", name
        assert secret in service["secrets"], name
    path = PurePosixPath(kind("ConfigMap")["data"][f"{variable}_FILE"])
    container = _engine_container()
    assert variable not in {e["name"] for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
    volume = next(v for v in _pod()["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "emguard-secrets"
    assert path.name in [i["path"] for i in volume["secret"]["items"]]


def _run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    stub = tmp_path / "bin" / "emguard"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\nenv | grep "^EMGUARD_" | sort\necho "args: $*"\n')
    stub.chmod(0o755)
    base = {"PATH": f"{stub.parent}:/usr/bin:/bin"}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "serve", "--orders", "/x"],
        env=base | env,
        capture_output=True,
        text=True,
    )


def test_entrypoint_reads_secret_files_into_the_engines_variables(tmp_path: Path) -> None:
    """Each *_FILE becomes its variable (newline stripped, _FILE unset); emguard gets the arguments."""
    files = {}
    for var in sorted(ENTRYPOINT_FILE_VARS):
        files[var] = tmp_path / var.lower()
        files[var].write_text(f"value of {var} with $ and ' quotes\n")
    done = _run_entrypoint(tmp_path, {k: str(v) for k, v in files.items()})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for var in ENTRYPOINT_FILE_VARS:
        assert f"{var.removesuffix('_FILE')}=value of {var} with $ and ' quotes" in lines
        assert not any(ln.startswith(f"{var}=") for ln in lines), var
    assert lines[-1] == "args: serve --orders /x"
    assert {"EMGUARD_MQTT_PASSWORD_FILE", "EMGUARD_MQTT_PUBLISH_PASSWORD_FILE"} <= (
        ENTRYPOINT_FILE_VARS
    )
    assert stat.S_IMODE(ENTRYPOINT.stat().st_mode) & 0o111


@pytest.mark.parametrize("problem", ["both", "missing", "empty"])
def test_entrypoint_stops_on_a_bad_secret_without_printing_it(tmp_path: Path, problem: str) -> None:
    """Both set, an unreadable file or an empty one stop the container, naming the variable only."""
    secret = tmp_path / "pw"
    secret.write_text("" if problem == "empty" else "s3cret-value\n")
    env = {"EMGUARD_MQTT_PASSWORD_FILE": str(secret if problem != "missing" else tmp_path / "no")}
    if problem == "both":
        env["EMGUARD_MQTT_PASSWORD"] = "inline-value"
    done = _run_entrypoint(tmp_path, env)
    assert done.returncode != 0 and "args:" not in done.stdout
    assert "EMGUARD_MQTT_PASSWORD" in done.stderr
    assert "s3cret-value" not in done.stderr + done.stdout
    assert "inline-value" not in done.stderr + done.stdout


def test_api_proxy_terminates_tls_for_each_engine() -> None:
    """nginx listens with TLS on each published port and passes it to one engine's HTTP port."""
    proxy = SERVICES["api-proxy"]
    conf = (DEPLOY / "proxy" / "nginx.conf").read_text()
    servers = re.findall(r"listen (\d+) ssl;\s*set \$engine http://([\w-]+):(\d+);", conf)
    published = {int(str(p).split(":")[-1]) for p in proxy["ports"]}
    assert {int(port) for port, _, _ in servers} == published
    assert {host for _, host, _ in servers} == set(ENGINES)
    for _, host, port in servers:
        assert int(port) == _engine_config(ENGINES[host]).http_port
    certs = {t for _, t in binds(proxy)}
    for directive in ("ssl_certificate", "ssl_certificate_key"):
        path = re.search(rf"^\s*{directive} (\S+);", conf, re.M)
        assert path and path.group(1) in certs, directive
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert "backend" in proxy["networks"]


def test_kubernetes_ingress_serves_the_api_with_tls_only() -> None:
    """The Ingress has a TLS section for its host, redirects HTTP and routes to the engines' http port."""
    ingress = kind("Ingress")
    (tls,) = ingress["spec"]["tls"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] in tls["hosts"] and tls["secretName"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] == (
        "true"
    )
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == kind("Service")["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in kind("Service")["spec"]["ports"]}
