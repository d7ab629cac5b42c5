"""The NATS deploy (compose.nats.yaml, nats/nats.conf, k8s-nats/) parsed and checked against the engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from _deploy_helpers import nats_server_version

from engine.runtime.nats_jetstream import NatsSettings
from engine.tools.deploy_nats import MQTT_TLS_TIMEOUT_S

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.nats.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
NATS_CONF = (DEPLOY / "nats" / "nats.conf").read_text()
K8S = [d for f in sorted((DEPLOY / "k8s-nats").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _kind(name: str) -> list[dict[str, Any]]:
    return [o for o in K8S if o.get("kind") == name]


def _mqtt_block() -> str:
    found = re.search(r"^mqtt \{\n(.*?)^\}", NATS_CONF, re.S | re.M)
    assert found, "no top-level mqtt block in nats.conf"
    return found.group(1)


def _nats_container() -> dict[str, Any]:
    (nats,) = _kind("StatefulSet")
    (container,) = nats["spec"]["template"]["spec"]["containers"]
    return {"pod": nats["spec"]["template"]["spec"], "container": container}


def test_devices_reach_mqtt_over_tls_only_with_the_certificate_the_deploys_mount() -> None:
    """8883 with a tls block whose cert and key are the files compose and k8s mount there;
    no plain MQTT port anywhere (NATS has one MQTT listener per server)."""
    mqtt = _mqtt_block()
    assert re.search(r"^  listen: 0\.0\.0\.0:8883$", mqtt, re.M)
    tls = re.search(r"tls \{(.*?)\}", mqtt, re.S)
    assert tls, "the MQTT listener has no tls block"
    files = dict(re.findall(r"^\s*(cert_file|key_file): (\S+)$", tls.group(1), re.M))
    assert files == {"cert_file": "/etc/nats-certs/server.crt", "key_file": "/etc/nats-certs/server.key"}
    assert "verify" not in re.sub(r"#.*", "", tls.group(1))  # devices log in with passwords, not client certificates
    timeout = re.search(r"^\s*timeout: (\S+)$", tls.group(1), re.M)
    assert timeout and float(timeout.group(1)) == MQTT_TLS_TIMEOUT_S  # generated configs agree
    assert "1883" not in re.sub(r"#.*", "", NATS_CONF)  # in no setting, comments aside
    for n, host_port in (("nats-1", 8883), ("nats-2", 8884), ("nats-3", 8885)):
        assert SERVICES[n]["ports"] == [f"{host_port}:8883"]
        assert {"./certs/nats-server.crt:/etc/nats-certs/server.crt:ro",
                "./certs/nats-server.key:/etc/nats-certs/server.key:ro"} <= set(SERVICES[n]["volumes"])
        assert not any(v.startswith("./certs:") for v in SERVICES[n]["volumes"])  # never ca.key
    k8s = _nats_container()
    (mount,) = [m for m in k8s["container"]["volumeMounts"] if m["mountPath"] == "/etc/nats-certs"]
    (volume,) = [v for v in k8s["pod"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "emguard-nats-tls"
    assert {i["path"]: i["key"] for i in volume["secret"]["items"]} == {
        "server.crt": "tls.crt", "server.key": "tls.key"}
    assert {p["name"]: p["containerPort"] for p in k8s["container"]["ports"]}["mqtt"] == 8883
    (service,) = [s for s in _kind("Service") if s["metadata"]["name"] == "nats"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["mqtt"] == 8883
    kustom = yaml.safe_load((DEPLOY / "k8s-nats" / "kustomization.yaml").read_text())
    (secret,) = [g for g in kustom["secretGenerator"] if g["name"] == "emguard-nats-tls"]
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["files"] == ["tls.crt=../certs/nats-server.crt", "tls.key=../certs/nats-server.key"]


def test_the_deploys_pin_the_nats_version_the_tests_run() -> None:
    """compose and k8s run the nats image of the nats-server the tests start (major.minor)."""
    images = {SERVICES[n]["image"] for n in SERVICES if n.startswith("nats-")}
    images.add(_nats_container()["container"]["image"])
    tested = nats_server_version()
    for image in images:
        found = re.fullmatch(r"nats:(\d+)\.(\d+)(?:\.\d+)?-alpine", image)
        assert found, image
        assert (int(found.group(1)), int(found.group(2))) == tested, (image, tested)


def test_three_nats_nodes_with_jetstream_routes_and_mqtt() -> None:
    """Three nodes, each named, JetStream on, routed to all three, MQTT with R3 session streams."""
    nodes = sorted(n for n in SERVICES if n.startswith("nats-"))
    assert nodes == ["nats-1", "nats-2", "nats-3"]
    assert {SERVICES[n]["environment"]["NATS_SERVER_NAME"] for n in nodes} == set(nodes)
    assert "server_name: $NATS_SERVER_NAME" in NATS_CONF and "jetstream {" in NATS_CONF
    routes = set(re.findall(r"nats-route://([\w-]+):6222", NATS_CONF))
    assert routes == set(nodes)
    assert re.search(r"stream_replicas: 3", _mqtt_block())
    assert 'include "accounts.conf"' in NATS_CONF  # generated logins: no anonymous device
    for n in nodes:
        assert "./nats/accounts.conf:/etc/nats/accounts.conf:ro" in SERVICES[n]["volumes"]


def test_two_workers_with_a_valid_nats_configuration() -> None:
    """Each worker runs `serve --transport nats` with settings the engine accepts, on every node."""
    workers = {n: s for n, s in SERVICES.items() if n.startswith("worker")}
    assert len(workers) == 2
    ids = set()
    for service in workers.values():
        assert service["command"] == ["serve", "--transport", "nats"]
        env = {k: str(v) for k, v in service["environment"].items()}
        env["EMGUARD_REDIS"] = "redis://r:6379/0"  # the entrypoint reads EMGUARD_REDIS_FILE into it
        assert env.pop("EMGUARD_NATS_PASSWORD_FILE") == "/run/secrets/nats_password"
        assert "nats_password" in service["secrets"]
        assert COMPOSE["secrets"]["nats_password"]["file"] == "./nats/secrets/nats_password"
        settings = NatsSettings.from_env(env)
        assert {u.split("//")[1].split(":")[0] for u in settings.servers} == {"nats-1", "nats-2", "nats-3"}
        assert settings.health_port == 8080
        assert settings.username == "emguard-engine"  # the login `emguard deploy nats` writes
        ids.add(settings.worker_id)
        assert env["EMGUARD_REDIS_FILE"] == "/run/secrets/redis_url" and "redis_url" in service["secrets"]
    assert len(ids) == 2
    assert "redis" in SERVICES


def test_k8s_workers_are_a_deployment_probed_on_the_health_port() -> None:
    """Workers are an autoscaled Deployment (no identities); NATS is a 3-node StatefulSet."""
    (deployment,) = _kind("Deployment")
    assert not any(o["metadata"]["name"] == "emguard-worker" for o in _kind("StatefulSet"))
    (nats,) = _kind("StatefulSet")
    assert nats["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve", "--transport", "nats"]
    env = {e["name"]: e for e in container["env"]}
    assert env["EMGUARD_REDIS"]["valueFrom"]["secretKeyRef"]["name"] == "emguard-secrets"
    port = int(env["EMGUARD_NATS_HEALTH_PORT"]["value"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    (hpa,) = _kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["maxReplicas"] <= int(env["EMGUARD_NATS_PARTITIONS"]["value"])
    kustom = yaml.safe_load((DEPLOY / "k8s-nats" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s-nats").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustom["resources"]) == files
