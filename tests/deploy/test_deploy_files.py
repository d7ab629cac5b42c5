"""compose.yaml, the Kubernetes manifests and the Dockerfile, checked against each other and the engine.

Docker and a cluster are not available here, so the files are parsed and
cross-checked: mounts point at files that exist (or that the generator
writes), every EMGUARD_* variable is one the engine reads and yields a valid
service config, ports agree end to end, probes hit the engine's endpoints.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from _deploy_helpers import DEPLOY, ORDERS_DOC, REPO

from engine.config import ServiceConfig
from engine.deploy_config import write_mosquitto_config
from engine.orders import load_orders

COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ENGINES = {name: s for name, s in SERVICES.items() if name.startswith("engine")}
BROKER_CONF = (DEPLOY / "broker" / "mosquitto.conf").read_text()
K8S = {
    p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted((DEPLOY / "k8s").glob("*.yaml"))
}
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()

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
    return {f"mosquitto/{p.name}" for p in out.iterdir()}


OPERATOR_PROVIDED = {"certs"}  # README: the operator puts ca.crt / server.crt / server.key here


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
    for engine in ENGINES.values():
        assert engine["env_file"] == ["./mosquitto/engine.env"]


def test_compose_builds_the_shipped_dockerfile() -> None:
    """The engines build deploy/Dockerfile with the repository root as context."""
    for engine in ENGINES.values():
        assert (DEPLOY / engine["build"]["context"] / engine["build"]["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        ).resolve()


def is_config_key(key: str) -> bool:
    """True when engine/config.py reads ``key`` (setting it to a non-default value changes the config)."""
    probe = {"EMGUARD_BROKER": "mqtt://probe:1", "EMGUARD_HTTP_PORT": "1234"}.get(
        key, "probe-value"
    )
    return ServiceConfig.from_env({key: probe}) != ServiceConfig()


def _engine_config(service: dict[str, Any]) -> ServiceConfig:
    env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
    env |= {"EMGUARD_MQTT_USERNAME": "emguard-engine", "EMGUARD_MQTT_PASSWORD": "from-engine.env"}
    return ServiceConfig.from_env(env)


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_engine_environment_is_the_engines_own_config(name: str) -> None:
    """Each EMGUARD_* key is read by engine/config.py, and together they make a valid service config."""
    service = ENGINES[name]
    for key in service["environment"]:
        assert key.startswith("EMGUARD_"), key
        assert is_config_key(key), f"{key} is not read by engine/config.py"
    cfg = _engine_config(service)
    assert cfg.broker == "mqtts://mosquitto:8883"
    assert cfg.shared_group == "emguard"
    assert (cfg.http_host, cfg.http_port) == ("0.0.0.0", 8080)
    targets = {target for _, target in binds(service)}
    assert cfg.orders in targets and cfg.mqtt_ca in targets
    redis = urlparse(cfg.redis or "")
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    command = service["command"]
    assert command[0] == "serve"
    assert command[command.index("--orders") + 1] == cfg.orders
    assert command[command.index("--broker") + 1] == cfg.broker


def test_engine_workers_share_a_group_with_distinct_stable_client_ids() -> None:
    """Two workers, one shared-subscription group, each its own fixed client id (session resumption)."""
    assert len(ENGINES) == 2
    ids = {_engine_config(s).client_id for s in ENGINES.values()}
    assert len(ids) == 2 and "emguard-engine" not in ids
    assert {_engine_config(s).shared_group for s in ENGINES.values()} == {"emguard"}


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


def test_redis_uses_aof_and_a_password() -> None:
    """Redis keeps an append-only file (engine state survives restarts) and requires auth."""
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--requirepass" in command


def test_prometheus_scrapes_each_engine_on_its_http_port() -> None:
    """The scrape targets are exactly the engine services on EMGUARD_HTTP_PORT."""
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for c in prom["scrape_configs"] for s in c["static_configs"] for t in s["targets"]}
    assert targets == {f"{name}:{_engine_config(s).http_port}" for name, s in ENGINES.items()}
    mounted = {source for source, _ in binds(SERVICES["prometheus"])}
    assert {"./prometheus/prometheus.yml", "./prometheus/alerts.yml"} <= mounted


def test_internal_services_are_not_published_to_the_world() -> None:
    """Only the broker's TLS port is public; Redis and engines have none, UIs bind to loopback."""
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert name == "mosquitto" or str(port).startswith("127.0.0.1:"), (name, port)
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
        "HorizontalPodAutoscaler",
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
    assert env["EMGUARD_MQTT_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "emguard-secrets"
    assert env["EMGUARD_REDIS"]["valueFrom"]["secretKeyRef"]["name"] == "emguard-secrets"
    assert env["EMGUARD_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert not any(k in config_map for k in ("EMGUARD_MQTT_PASSWORD", "EMGUARD_REDIS"))
    values = dict(config_map) | {"EMGUARD_MQTT_PASSWORD": "x", "EMGUARD_REDIS": "redis://r:6379/0"}
    for key in values:
        assert is_config_key(key), f"{key} is not read by engine/config.py"
    cfg = ServiceConfig.from_env(values)
    assert cfg.broker.startswith("mqtts://") and cfg.http_port == 8080 and cfg.shared_group
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


def test_hpa_pdb_and_service_select_the_engine_pods() -> None:
    """HPA scales the StatefulSet on CPU from two replicas; PDB and Service select its pods."""
    sts = kind("StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    hpa = kind("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": sts["metadata"]["name"],
    }
    assert hpa["minReplicas"] >= 2
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"])
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
    (ingress,) = policy["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [8080]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
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
    assert 'ENTRYPOINT ["emguard"]' in runtime
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
    for directory in ("mosquitto", "certs"):
        rules = (DEPLOY / directory / ".gitignore").read_text().splitlines()
        assert "*" in rules and "!.gitignore" in rules


def test_readme_documents_every_broker_setting() -> None:
    """deploy/README.md explains each broker setting the generator writes."""
    from engine.deploy_config import BROKER_SETTINGS

    readme = (DEPLOY / "README.md").read_text()
    for setting in BROKER_SETTINGS:
        assert f"`{setting.key}`" in readme, setting.key
