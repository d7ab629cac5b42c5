"""The real engine, started through the image's entrypoint, works under the generated broker config.

This is the contract between deploy/ and engine/runtime/service.py (issue 21): with
``use_username_as_clientid`` the engine's receiving connection logs in as
``EMGUARD_MQTT_USERNAME`` and its publishing one as ``<username>-pub`` with
``EMGUARD_MQTT_PUBLISH_PASSWORD``; both passwords come from the generated
secret files through ``*_FILE`` variables read by deploy/entrypoint.sh.  A
device then sending the worker's client id must not disturb it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _deploy_helpers import DEPLOY, ORDERS_DOC, REPO, free_port, run_generated_broker

from engine.core.orders import OrderBook

pytestmark = pytest.mark.integration

WORKER = "emguard-engine-0"
TOKEN = "t" * 32  # `serve` refuses to start without API tokens (HTTP branch of issue 21)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, within_s: float = 90) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"engine exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"engine not ready within {within_s} s:\n{log.read_text()[-4000:]}")


def _fixes_received(port: int) -> float:
    _, text = _get(port, "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("emguard_fixes_received_total")
    )


def test_engine_worker_connects_with_both_logins_and_a_client_id_thief_cannot_disturb_it(
    book: OrderBook, broker_dir: Path, start_broker: Any, probes: Any
) -> None:
    """Worker emguard-engine-0 becomes ready on the generated config (both connections up), keeps
    receiving fixes while a monitor connects with its client ids, and the broker closes nothing."""
    broker = run_generated_broker(book, broker_dir, start_broker)
    orders = broker_dir / "orders.json"
    orders.write_text(json.dumps(ORDERS_DOC))
    http = free_port()
    venv_bin = Path(sys.executable).parent
    emguard = shutil.which("emguard", path=str(venv_bin)) or pytest.fail("no emguard script")
    env = {
        "PATH": f"{Path(emguard).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO),  # this checkout, not whichever one the venv points at
        "HOME": str(broker_dir),
        "EMGUARD_BROKER": f"mqtt://127.0.0.1:{broker.port}",
        "EMGUARD_MQTT_USERNAME": WORKER,
        "EMGUARD_CLIENT_ID": WORKER,
        "EMGUARD_MQTT_PASSWORD_FILE": str(broker.bundle.mqtt_password),
        "EMGUARD_MQTT_PUBLISH_PASSWORD_FILE": str(broker.bundle.mqtt_publish_password),
        "EMGUARD_ORDERS": str(orders),
        "EMGUARD_SHARED_GROUP": "emguard",
        "EMGUARD_HTTP_PORT": str(http),
        "EMGUARD_API_TOKENS": f"{TOKEN}:ops:supervisor",
    }
    for key in ("NUMBA_CACHE_DIR", "LANG"):
        if key in os.environ:
            env[key] = os.environ[key]
    log = broker_dir / "engine.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["sh", str(DEPLOY / "entrypoint.sh"), "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(http, proc, log)
        _, body = _get(http, "/readyz")
        state = json.loads(body)
        assert state["broker_connected"] and state["publishing_connected"], state
        log_before = len(broker.broker.log_text())

        thieves = [
            probes(broker.port, "AM-1001", broker.passwords["AM-1001"], client_id=cid)
            for cid in (WORKER, f"{WORKER}-pub")
        ]
        assert all(t.accepted for t in thieves)
        victim = probes(broker.port, "VD-2001", broker.passwords["VD-2001"])
        before = _fixes_received(http)
        fix = {
            "v": 1,
            "device": "VD-2001",
            "seq": 1,
            "t": int(time.time() * 1000),
            "lat": 51.92,
            "lon": 4.47,
            "acc": 8.0,
        }
        assert not victim.publish("em/dev/VD-2001/fix", json.dumps(fix).encode()).is_failure
        deadline = time.monotonic() + 15
        while _fixes_received(http) <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _fixes_received(http) > before, "the worker stopped receiving fixes"
        assert _get(http, "/readyz")[0] == 200
        broker_log = broker.broker.log_text()[log_before:]
        # (the second thief, the same login, does take over the first: its own session only)
        for name in (WORKER, f"{WORKER}-pub", "VD-2001"):
            assert f"Client {name} already connected" not in broker_log, broker_log
        assert "lost" not in log.read_text().lower(), log.read_text()[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
