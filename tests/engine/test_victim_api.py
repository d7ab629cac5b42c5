"""The victim app's API: a device token acts for its own device only, and hears only its own messages."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.core.effects import Effects
from engine.core.messages import Outgoing
from engine.core.testing import ORIGIN, T0, DeviceScript, orders_doc
from engine.errors import ConfigError
from engine.runtime.supervise import ServiceFailed
from engine.web.device_tokens import DeviceTokens, device_tokens_from_env, parse_device_tokens
from engine.web.victim_api import MAX_BODY
from engine.web.victim_feed import VictimFeed
from tests.engine.api_support import World, make_world

VICTIM = "victim-token-aaaaaaaaaaaa"
OTHER_VICTIM = "victim-token-bbbbbbbbbbbb"
SUBJECT = "subject-token-cccccccccccc"
UNLISTED = "unlisted-token-dddddddddddd"
TOKENS = f"{VICTIM}:VD-2001,{OTHER_VICTIM}:VD-2002,{SUBJECT}:AM-1001,{UNLISTED}:VD-9999"


def two_victims() -> dict[str, Any]:
    """S-1 (AM-1001) kept from P-1 (VD-2001) and P-2 (VD-2002)."""
    doc = orders_doc(
        proximity=[
            {"protected_person": "P-1", "alert_m": 500, "warn_m": 1000},
            {"protected_person": "P-2", "alert_m": 500, "warn_m": 1000},
        ]
    )
    doc["protected_persons"].append({"id": "P-2", "devices": ["VD-2002"]})
    return doc


Submitted = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    """Two victims and their device tokens (the service is not running)."""
    monkeypatch.setenv("EMGUARD_DEVICE_TOKENS", TOKENS)
    monkeypatch.delenv("EMGUARD_DEVICE_TOKENS_FILE", raising=False)
    return make_world(doc=two_victims())


@pytest.fixture
def submitted(world: World) -> Submitted:
    """What the API submitted to the service, recorded instead of processed."""
    seen: Submitted = []

    async def submit(topic: str, payload: bytes) -> None:
        seen.append((topic, json.loads(payload)))

    world.service.submit = submit  # type: ignore[method-assign]
    return seen


def fix(device: str = "VD-2001", seq: int = 1) -> dict[str, Any]:
    return {"v": 1, "device": device, "seq": seq, "t": "2026-11-18T11:06:40Z",
            "lat": 51.92, "lon": 4.47, "acc": 8.0}


def client(w: World, token: str | None) -> httpx.AsyncClient:
    return w.client(token)


def approach(w: World) -> None:
    """The ankle monitor comes up to P-1 fast: an alarm, then critical, reaches her device."""
    victim = DeviceScript("VD-2001")
    w.send(victim.fix(T0 - 20, *ORIGIN), T0 - 19)
    w.send(victim.fix(T0 - 5, *ORIGIN), T0 - 4)
    for i, d in enumerate([2400, 2000, 1600, 1200, 800, 450]):
        w.clock.now = T0 + 0.1 * i
        w.send(w.subject.fix(T0 - 10 * (5 - i) - 1, ORIGIN[0] + d, ORIGIN[1]))


# --- credentials -------------------------------------------------------------------------------
def test_tokens_parse_from_env_and_file(tmp_path: Path) -> None:
    """Entries come from the variable and the file (comments allowed); each names one device."""
    f = tmp_path / "tokens"
    f.write_text(f"# phones of the Rotterdam pilot\n{OTHER_VICTIM}:VD-2002  # P-2\n")
    tokens = device_tokens_from_env(
        {"EMGUARD_DEVICE_TOKENS": f"{VICTIM}:VD-2001", "EMGUARD_DEVICE_TOKENS_FILE": str(f)}
    )
    assert tokens == {VICTIM: "VD-2001", OTHER_VICTIM: "VD-2002"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just-a-token-without-device", "use token:device_id"),
        ("short:VD-1", "shorter than 16"),
        (f"{VICTIM}:VD-1,{VICTIM}:VD-2", "given twice"),
        (f"{VICTIM}:", "use token:device_id"),
    ],
)
def test_bad_token_entries_fail_at_start(text: str, message: str) -> None:
    """A malformed, short or repeated token stops start-up with what to fix."""
    with pytest.raises(ConfigError, match=message):
        parse_device_tokens(text)


def test_missing_token_file_fails_at_start(tmp_path: Path) -> None:
    """A token file that cannot be read is our misconfiguration, said at start-up."""
    with pytest.raises(ConfigError, match="cannot read"):
        device_tokens_from_env({"EMGUARD_DEVICE_TOKENS_FILE": str(tmp_path / "nope")})


def test_token_lookup_needs_bearer_and_exact_token() -> None:
    """Only ``Bearer <exact token>`` identifies a device; a prefix or another scheme does not."""
    tokens = DeviceTokens({VICTIM: "VD-2001", OTHER_VICTIM: "VD-2002"})
    assert tokens.device(f"Bearer {VICTIM}") == "VD-2001"
    assert tokens.device(f"bearer {OTHER_VICTIM} ") == "VD-2002"
    for header in (None, "", VICTIM, f"Basic {VICTIM}", f"Bearer {VICTIM[:-1]}", f"Bearer {VICTIM}x"):
        assert tokens.device(header) is None


# --- who may call ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/victim/api/state", "/victim/api/stream"])
async def test_no_token_or_a_wrong_one_is_refused(world: World, path: str) -> None:
    """401 with a Bearer challenge, for a missing and for an unknown token."""
    for token in (None, "wrong-token-eeeeeeeeeeee"):
        async with client(world, token) as c:
            r = await c.get(path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.headers["cache-control"] == "no-store"


async def test_only_protected_persons_devices_may_use_the_app(world: World, submitted: Submitted) -> None:
    """An ankle monitor's token, or one for a device in no order, is refused (403)."""
    for token, device in ((SUBJECT, "AM-1001"), (UNLISTED, "VD-9999")):
        async with client(world, token) as c:
            r = await c.post("/victim/api/fixes", json=[fix(device)])
        assert r.status_code == 403, r.text
    assert submitted == []


async def test_without_device_tokens_the_api_refuses_everyone(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token configured is not an open door: every call gets 503 and the app still loads."""
    monkeypatch.delenv("EMGUARD_DEVICE_TOKENS", raising=False)
    monkeypatch.delenv("EMGUARD_DEVICE_TOKENS_FILE", raising=False)
    w = make_world()
    async with client(w, VICTIM) as c:
        assert (await c.get("/victim/api/state")).status_code == 503
        assert (await c.post("/victim/api/fixes", json=[fix()])).status_code == 503
        page = await c.get("/victim/")
    assert page.status_code == 200 and "app.js" in page.text


# --- fixes and panic ---------------------------------------------------------------------------
async def test_her_fixes_are_submitted_in_order_on_her_topic(world: World, submitted: Submitted) -> None:
    """Each fix of the array joins the engine's inbox on em/dev/VD-2001/fix, in order."""
    async with client(world, VICTIM) as c:
        r = await c.post("/victim/api/fixes", json=[fix(seq=s) for s in (7, 8, 9)])
    assert r.status_code == 200
    assert r.json() == {"accepted": 3, "seqs": [7, 8, 9]}
    assert r.headers["cache-control"] == "no-store"
    assert submitted == [("em/dev/VD-2001/fix", fix(seq=s)) for s in (7, 8, 9)]


async def test_another_devices_fix_refuses_the_whole_batch(world: World, submitted: Submitted) -> None:
    """One fix naming another device (even another victim's) and nothing is submitted."""
    async with client(world, VICTIM) as c:
        r = await c.post("/victim/api/fixes", json=[fix(seq=1), fix("VD-2002", seq=2)])
        also = await c.post("/victim/api/fixes", json=[{k: v for k, v in fix().items() if k != "device"}])
    assert r.status_code == 403 and also.status_code == 403
    assert submitted == []


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"[]", 415),
        ("application/x-www-form-urlencoded", b"a=b", 415),
        ("application/json", b"[{", 400),
        ("application/json", b'"a string"', 400),
        ("application/json", b"[1, 2]", 400),
        ("application/json; charset=utf-8", json.dumps([fix()]).encode(), 200),
    ],
)
async def test_content_type_and_shape(world: World, submitted: Submitted, content_type: str, body: bytes, status: int) -> None:
    """application/json only (415 otherwise); a body that is not an array of fixes is a 400."""
    async with client(world, VICTIM) as c:
        r = await c.post("/victim/api/fixes", content=body, headers={"content-type": content_type})
    assert r.status_code == status, r.text


async def test_body_size_limit_with_and_without_content_length(world: World, submitted: Submitted) -> None:
    """A body over 256 KiB is refused (413), whether declared up front or streamed in chunks."""
    big = json.dumps([fix(seq=i) for i in range(MAX_BODY // 100)]).encode()
    assert len(big) > MAX_BODY

    async def chunks() -> Any:
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with client(world, VICTIM) as c:
        declared = await c.post("/victim/api/fixes", content=big, headers={"content-type": "application/json"})
        streamed = await c.post("/victim/api/fixes", content=chunks(), headers={"content-type": "application/json"})
    assert declared.status_code == 413 and streamed.status_code == 413
    assert submitted == []


async def test_panic_is_submitted_as_her_device_event(world: World, submitted: Submitted) -> None:
    """The panic event goes to em/dev/VD-2001/event; another type or device is refused."""
    event = {"v": 1, "device": "VD-2001", "seq": 10, "t": "2026-11-18T11:06:40Z", "type": "panic", "detail": {}}
    async with client(world, VICTIM) as c:
        wrong_type = await c.post("/victim/api/panic", json=event | {"type": "strap_cut"})
        wrong_device = await c.post("/victim/api/panic", json=event | {"device": "VD-2002"})
        ok = await c.post("/victim/api/panic", json=event)
    assert (wrong_type.status_code, wrong_device.status_code, ok.status_code) == (400, 403, 200)
    assert submitted == [("em/dev/VD-2001/event", event)]


async def test_a_stopping_service_answers_503_so_the_app_keeps_the_fixes(world: World) -> None:
    """Submit failing (service stopping) is a 503 with Retry-After, never a 200."""

    async def failing(topic: str, payload: bytes) -> None:
        raise ServiceFailed("the service is stopping")

    world.service.submit = failing  # type: ignore[method-assign]
    async with client(world, VICTIM) as c:
        r = await c.post("/victim/api/fixes", json=[fix()])
    assert r.status_code == 503 and r.headers["retry-after"] == "5"


async def test_fixes_reach_the_engine_through_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a fake: the answer comes once the service has processed and committed both fixes."""
    monkeypatch.setenv("EMGUARD_DEVICE_TOKENS", TOKENS)
    w = make_world(doc=two_victims())
    w.clock.now = T0 + 1
    processor = asyncio.create_task(w.service._processor())
    committer = asyncio.create_task(w.service._committer_loop())
    try:
        async with client(w, VICTIM) as c:
            r = await asyncio.wait_for(c.post("/victim/api/fixes", json=[fix(seq=1), fix(seq=2)]), 5)
    finally:
        processor.cancel()
        committer.cancel()
        await asyncio.gather(processor, committer, return_exceptions=True)
    assert r.status_code == 200
    track = w.engine.tracks["VD-2001"]
    assert 1 in track.seen and 2 in track.seen  # taken in (held for reordering until it settles)


# --- what she hears ----------------------------------------------------------------------------
def test_feed_routes_only_her_own_warnings_and_commands() -> None:
    """Centre, offender, dead-letter and other devices' messages never reach a victim stream."""
    feed = VictimFeed("em")
    own = Outgoing("victim", "em/alerts/victim/VD-2001", {"v": 1, "alert_id": "A-1", "level": "alarm"})
    assert feed.route(own) == ("VD-2001", ("warning", own.payload))
    for message in (
        Outgoing("centre", "em/alerts/centre", {"alert_id": "A-1", "lat": 51.9}),
        Outgoing("subject", "em/cmd/subject/AM-1001", {"instruction": "leave_area"}),
        Outgoing("deadletter", "em/deadletter", {"reason": "x"}),
        Outgoing("victim", "em/alerts/victim/VD-2001/extra", {"level": "alarm"}),
        Outgoing("centre", "em/alerts/victim/VD-2001", {"level": "alarm"}),  # wrong channel
        Outgoing("device", "em/cmd/device/VD-2001", {"instruction": "reboot"}),  # not a known command
    ):
        assert feed.route(message) is None


def test_feed_passes_only_contract_fields() -> None:
    """A position or distance slipped into a victim payload is dropped at the boundary."""
    feed = VictimFeed("em")
    leaked = Outgoing(
        "victim",
        "em/alerts/victim/VD-2001",
        {"v": 1, "alert_id": "A-1", "level": "alarm", "message": "m", "advice": "a", "near": "within 1 km",
         "t": "x", "lat": 51.9, "lon": 4.4, "distance_m": 640.0, "subject": "S-1"},
    )
    routed = feed.route(leaked)
    assert routed is not None
    assert set(routed[1][1]) == {"v", "alert_id", "level", "message", "advice", "near", "t"}
    cmd = Outgoing("device", "em/cmd/device/VD-2001",
                   {"v": 1, "t": "x", "instruction": "set_interval", "interval_s": 15, "peer": "AM-1001"})
    routed = feed.route(cmd)
    assert routed is not None and routed[1] == ("command", {"v": 1, "t": "x", "instruction": "set_interval",
                                                             "interval_s": 15})


def test_feed_fans_out_per_device_and_resyncs_a_stalled_phone() -> None:
    """Each device's queue gets its own events; a full queue is emptied and told to resync."""
    feed = VictimFeed("em")
    mine = Outgoing("victim", "em/alerts/victim/VD-2001", {"alert_id": "A-1", "level": "alarm"})
    theirs = Outgoing("victim", "em/alerts/victim/VD-2002", {"alert_id": "A-2", "level": "alarm"})
    with feed.subscribe("VD-2001") as q1, feed.subscribe("VD-2002") as q2:
        feed.on_effects(Effects([mine, theirs, mine]), T0)
        assert [q1.get_nowait(), q1.get_nowait()] == [("warning", mine.payload)] * 2 and q1.empty()
        assert q2.get_nowait() == ("warning", theirs.payload) and q2.empty()
        feed.on_effects(Effects([mine] * (q1.maxsize + 1)), T0)
        assert q1.get_nowait() == ("resync", {})
    assert feed.streams == {}


async def test_state_shows_her_current_warning_without_his_position(world: World) -> None:
    """After an approach her state holds the critical warning with a coarse band; P-2's holds nothing."""
    approach(world)
    async with client(world, VICTIM) as c:
        mine = (await c.get("/victim/api/state")).json()
    async with client(world, OTHER_VICTIM) as c:
        theirs = (await c.get("/victim/api/state")).json()
    assert [w["level"] for w in mine["warnings"]] == ["critical"]
    assert mine["warnings"][0]["near"] == "within 500 m"
    assert mine["warnings"][0]["kind"] == "proximity"
    assert mine["command"] == {"v": 1, "t": mine["command"]["t"], "instruction": "set_interval", "interval_s": 15}
    assert theirs["warnings"] == [] and theirs["command"] is None
    text = json.dumps(mine)
    for leak in ('"lat"', '"lon"', "distance_m", "AM-1001", "S-1"):
        assert leak not in text


async def test_stream_carries_her_events_and_never_another_devices(world: World) -> None:
    """Over a real HTTP connection: state first, then only VD-2001's warning and command."""
    await world.server.start()
    events: list[tuple[str, dict[str, Any]]] = []
    try:
        async with (
            httpx.AsyncClient(base_url=world.server.url, timeout=5) as c,
            c.stream("GET", "/victim/api/stream", headers={"authorization": f"Bearer {VICTIM}"}) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            name = None
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    events.append((name, json.loads(line[6:])))
                    if name == "state":  # connected: now let the engine speak
                        approach(world)
                    if sum(1 for n, _ in events if n == "warning") == 2:
                        break
    finally:
        await world.server.stop()
    names = [n for n, _ in events]
    assert names[0] == "state" and names.count("command") == 1
    warnings = [p for n, p in events if n == "warning"]
    assert [(w["level"], w["kind"]) for w in warnings] == [("alarm", "proximity"), ("critical", "proximity")]
    text = json.dumps(events)
    for leak in ('"lat"', '"lon"', "distance_m", "AM-1001", "VD-2002", "S-1"):
        assert leak not in text


async def test_stream_ends_when_the_server_stops(world: World) -> None:
    """An open stream does not hold the server's shutdown for its grace period."""
    await world.server.start()
    async with httpx.AsyncClient(base_url=world.server.url, timeout=5) as c:
        async with c.stream("GET", "/victim/api/stream", headers={"authorization": f"Bearer {VICTIM}"}) as r:
            await r.aiter_lines().__anext__()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await world.server.stop()
            assert loop.time() - started < 2.0


async def test_the_app_is_served_with_its_own_strict_policy(world: World) -> None:
    """Page and service worker say manifest-src and worker-src, so a default-src 'none' cannot break them."""
    async with client(world, None) as c:
        page = await c.get("/victim/")
        worker = await c.get("/victim/sw.js")
        manifest = await c.get("/victim/manifest.webmanifest")
    for r in (page, worker):
        policy = r.headers["content-security-policy"]
        assert "manifest-src 'self'" in policy and "worker-src 'self'" in policy
        assert "unsafe-inline" not in policy and r.headers["cache-control"] == "no-cache"
    assert manifest.headers["content-type"] == "application/manifest+json"
    assert manifest.json()["name"] == "Weer"


async def test_stopping_the_http_server_removes_the_victim_feed_listener(world: World) -> None:
    """A stopped server leaves no listener behind on the service (the victim feed included)."""
    from engine.web.server import HttpServer

    before = list(world.service.listeners)
    server = HttpServer(world.service, port=0, tokens={"tok-0123456789abcdef": _principal()})
    await server.start()
    assert len(world.service.listeners) > len(before)
    await server.stop()
    assert world.service.listeners == before


def _principal() -> Any:
    from engine.web.auth import Principal

    return Principal("op", "operator")


async def test_state_after_the_centre_closes_her_warning_is_empty(world: World) -> None:
    """A warning a person closed is gone from her screen; one only acknowledged stays with its status."""
    approach(world)
    alert = next(a for a in world.service.engine.alerts.alerts.values() if a.kind == "proximity")
    world.service.act(alert.alert_id, "ack", "operator-1", "calling her")
    async with client(world, VICTIM) as c:
        handled = (await c.get("/victim/api/state")).json()
    assert [w.get("status") for w in handled["warnings"]] == [None, "acknowledged"]
    world.service.act(alert.alert_id, "close", "operator-1", "he was arrested", outcome="police_dispatched")
    async with client(world, VICTIM) as c:
        closed = (await c.get("/victim/api/state")).json()
    assert closed["warnings"] == []
