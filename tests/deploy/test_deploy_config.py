"""The pure side of engine.tools.deploy_config: password hashes, account planning, rendering, files."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _deploy_helpers import ORDERS_DOC
from hypothesis import example, given, settings
from hypothesis import strategies as st

from devices.errors import DeviceError
from devices.registry import DeviceRegistry
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.errors import ConfigError
from engine.tools.deploy_config import MqttAccount, check_name, new_password, plan_accounts
from engine.tools.deploy_mosquitto import (
    BROKER_SETTINGS,
    hash_password,
    main_mosquitto,
    render_acl,
    verify_password,
    write_mosquitto_config,
)

HASH_RE = re.compile(r"^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$")


def _accounts(book: OrderBook, **kw: Any) -> dict[str, MqttAccount]:
    return {a.username: a for a in plan_accounts(DeviceRegistry.from_orders(book), **kw)}


def _orders(**changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(ORDERS_DOC))
    doc.update(changes)
    return doc


# --------------------------------------------------------------------------- passwords


def test_hash_has_mosquitto_7_layout() -> None:
    """A hash is $7$, 101 iterations, a 12-byte salt and a 64-byte PBKDF2-SHA512 digest in base64."""
    encoded = hash_password("secret")
    assert HASH_RE.match(encoded), encoded
    _, _, iterations, salt, digest = encoded.split("$")
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", base64.b64decode(salt), int(iterations))
    assert base64.b64decode(digest) == expected


def test_same_password_gets_a_fresh_salt_each_time() -> None:
    """Two hashes of one password differ (random salt) and both verify."""
    a, b = hash_password("same"), hash_password("same")
    assert a != b
    assert verify_password("same", a) and verify_password("same", b)


# No NUL: HMAC zero-pads short keys, so PBKDF2 (ours and mosquitto's) cannot tell "" from "\0";
# mosquitto reads passwords as C strings anyway, and generated passwords are URL-safe text.
# No lone surrogates either: they are not text that can be encoded.
_TEXT = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=64
)


@settings(max_examples=200, deadline=None)
@given(password=_TEXT, other=_TEXT)
@example(password="", other=" ")
@example(password="pässwörd€", other="passwort")
@example(password="a:b$c", other="a:b$d")
def test_verify_accepts_the_password_and_nothing_else(password: str, other: str) -> None:
    """verify_password is true for the hashed password and false for any other."""
    encoded = hash_password(password, iterations=5)
    assert verify_password(password, encoded)
    assert verify_password(other, encoded) is (other == password)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "$6$101$c2FsdA==$ZGln",
        "$7$x$c2FsdA==$ZGln",
        "$7$101$!!!$ZGln",
        "$7$101$c2FsdA==",
        "7$101$a$b$c",
    ],
)
def test_verify_rejects_malformed_hashes(encoded: str) -> None:
    """Anything that is not a well-formed $7$ hash never verifies."""
    assert verify_password("x", encoded) is False


@pytest.mark.integration
def test_hash_is_byte_identical_to_mosquitto_passwd(tmp_path: Path) -> None:
    """Given mosquitto_passwd's salt, our generator reproduces its line exactly."""
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        pytest.fail("mosquitto_passwd not found on PATH (apt-get install mosquitto)")
    pwfile = tmp_path / "pw"
    pwfile.touch()
    subprocess.run([binary, "-b", str(pwfile), "alice", "s3cret:with$odd chars"], check=True)
    user, encoded = pwfile.read_text().strip().split(":", 1)
    salt = base64.b64decode(encoded.split("$")[3])
    assert user == "alice"
    assert hash_password("s3cret:with$odd chars", salt=salt) == encoded
    assert verify_password("s3cret:with$odd chars", encoded)


def test_new_passwords_are_long_random_and_shell_safe() -> None:
    """Generated passwords have 256 bits, only URL-safe characters, and never repeat."""
    seen = {new_password() for _ in range(200)}
    assert len(seen) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", p) for p in seen)


# --------------------------------------------------------------------------- names and accounts


@pytest.mark.parametrize("name", ["AM-1001", "VD_2001", "emguard-engine", "a.b", "ö"])
def test_safe_names_pass(name: str) -> None:
    """Ordinary device ids and usernames are accepted unchanged."""
    assert check_name(name, "device id") == name


@pytest.mark.parametrize(
    "name", ["", "+", "AM#1", "a/b", "user:x", "two words", "tab\t", "$SYS", "nl\n", "del\x7f"]
)
def test_unsafe_names_fail_with_a_message(name: str) -> None:
    """Wildcards, separators, whitespace, control characters and '$' prefixes cannot become ACL lines."""
    with pytest.raises(ConfigError, match="cannot be used as a broker username"):
        check_name(name, "device id")


def test_accounts_follow_roles(book: OrderBook) -> None:
    """Engine, centre, each native device by id, and the OwnTracks phone by its OwnTracks user."""
    accounts = _accounts(book, engine_workers=2)
    assert {u: a.role for u, a in accounts.items()} == {
        "emguard-engine": "engine",
        "emguard-engine-pub": "engine_publisher",
        "emguard-engine-0": "engine",
        "emguard-engine-0-pub": "engine_publisher",
        "emguard-engine-1": "engine",
        "emguard-engine-1-pub": "engine_publisher",
        "centre": "centre",
        "AM-1001": "ankle_monitor",
        "AM-1002": "ankle_monitor",
        "VD-2001": "victim_device",
        "VD-2002": "victim_device",
        "anna": "victim_phone",
    }
    assert accounts["anna"].write == ("owntracks/anna/phone",)
    assert accounts["anna"].read == ("em/alerts/victim/PH-2001", "em/cmd/device/PH-2001")
    assert accounts["AM-1001"].read == ("em/cmd/subject/AM-1001", "em/cmd/device/AM-1001")
    assert accounts["VD-2001"].write == ("em/dev/VD-2001/fix", "em/dev/VD-2001/event")


def test_topic_prefix_is_applied_everywhere(book: OrderBook) -> None:
    """EMGUARD_TOPIC_PREFIX other than 'em' moves every native topic, not the OwnTracks ones."""
    accounts = _accounts(book, topic_prefix="city")
    topics = [t for a in accounts.values() for t in (*a.read, *a.write)]
    assert all(t.startswith(("city/", "owntracks/")) for t in topics)
    assert "owntracks/anna/phone" in topics


def test_registry_file_adds_a_phone_login(book: OrderBook, tmp_path: Path) -> None:
    """A phone that only the registry file names gets its own OwnTracks login and nothing more."""
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps(
            {"v": 1, "devices": [{"id": "VP-3001", "owner": "P-2", "owntracks": "bea/iphone"}]}
        )
    )
    bundle = write_mosquitto_config(book, tmp_path / "out", registry_path=registry)
    bea = next(a for a in bundle.accounts if a.username == "bea")
    assert (bea.role, bea.device, bea.write) == (
        "victim_phone",
        "VP-3001",
        ("owntracks/bea/iphone",),
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {
                "subjects": [
                    {"id": "S-1", "devices": ["AM 1"]},
                    {"id": "S-2", "devices": ["AM-1002"]},
                ]
            },
            "AM 1",
        ),
        (
            {
                "subjects": [
                    {"id": "S-1", "devices": ["centre"]},
                    {"id": "S-2", "devices": ["AM-1002"]},
                ]
            },
            "used twice",
        ),
        (
            {
                "owntracks": {"AM-1002/phone": "PH-2001"},
                "protected_persons": [
                    {"id": "P-1", "devices": ["VD-2001", "PH-2001"]},
                    {"id": "P-2", "devices": ["VD-2002"]},
                ],
            },
            "used twice",
        ),
        (
            {
                "owntracks": {"x/y": "PH-2001", "x/z": "VD-2002"},
                "protected_persons": [
                    {"id": "P-1", "devices": ["VD-2001", "PH-2001"]},
                    {"id": "P-2", "devices": ["VD-2002"]},
                ],
            },
            "different protected persons",
        ),
    ],
    ids=[
        "space-in-id",
        "device-named-like-centre",
        "owntracks-user-is-a-device-id",
        "one-login-two-victims",
    ],
)
def test_unsafe_or_ambiguous_setups_are_refused(
    changes: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """Setups that would give one login two identities, or unsafe ACL lines, fail before writing anything."""
    book = load_orders(_orders(**changes))
    with pytest.raises(ConfigError, match=message):
        write_mosquitto_config(book, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_offender_monitor_cannot_get_an_owntracks_login(tmp_path: Path) -> None:
    """Mapping an OwnTracks topic to an ankle monitor is refused, not silently dropped."""
    book = load_orders(_orders(owntracks={"evil/phone": "AM-1001"}))
    with pytest.raises(ConfigError, match="evil/phone"):
        write_mosquitto_config(book, tmp_path / "out")


def test_registry_errors_are_reported_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registry that gives an ankle monitor an OwnTracks login fails with the registry's message."""
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(ORDERS_DOC))
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps(
            {"v": 1, "devices": [{"id": "AM-1001", "role": "ankle_monitor", "owntracks": "e/p"}]}
        )
    )
    assert main_mosquitto(orders, tmp_path / "out", registry, None) == 2
    assert "OwnTracks" in capsys.readouterr().err
    with pytest.raises(DeviceError):
        DeviceRegistry.load(registry, load_orders(ORDERS_DOC))


def test_acl_has_no_patterns_and_no_anonymous_rules(book: OrderBook) -> None:
    """Every rule sits under a 'user' line; no 'pattern' line can widen a user's rights."""
    text = render_acl(plan_accounts(DeviceRegistry.from_orders(book)))
    rules = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert rules[0].startswith("user ")
    assert not any(ln.startswith("pattern") for ln in rules)
    assert all(re.fullmatch(r"(user \S+|topic (read|write) \S+)", ln) for ln in rules)


def test_only_the_engine_holds_wildcard_rights(book: OrderBook) -> None:
    """Device and centre accounts list literal topics only; the engine's wildcards are the ones the issue names."""
    for account in plan_accounts(DeviceRegistry.from_orders(book)):
        wild = [t for t in (*account.read, *account.write) if "+" in t or "#" in t]
        if account.role == "engine":
            assert account.write == ()
            assert sorted(wild) == sorted(["em/dev/#", "owntracks/#"])
        elif account.role == "engine_publisher":
            assert account.read == ()
            assert sorted(wild) == sorted(["em/alerts/#", "em/cmd/#"])
        else:
            assert wild == [], account


# --------------------------------------------------------------------------- files


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bundle_files_and_modes(book: OrderBook, tmp_path: Path) -> None:
    """Clear-text secrets are 0600; every password in credentials.json verifies against passwd."""
    bundle = write_mosquitto_config(book, tmp_path / "out")
    assert _mode(bundle.credentials) == 0o600
    assert _mode(bundle.engine_env) == 0o600
    assert _mode(bundle.password_file) == 0o600
    assert _mode(bundle.acl_file) == 0o644
    hashes = dict(ln.split(":", 1) for ln in bundle.password_file.read_text().splitlines())
    creds = json.loads(bundle.credentials.read_text())["accounts"]
    assert {c["username"] for c in creds} == set(hashes)
    for c in creds:
        assert verify_password(c["password"], hashes[c["username"]])
        assert c["password"] not in bundle.password_file.read_text()
        assert c["password"] not in bundle.acl_file.read_text()
        assert c["password"] not in bundle.config.read_text()
    by_user = {c["username"]: c["password"] for c in creds}
    receiving, publishing = by_user["emguard-engine"], by_user["emguard-engine-pub"]
    assert receiving != publishing
    assert bundle.engine_env.read_text() == (
        "EMGUARD_MQTT_USERNAME=emguard-engine\n"
        f"EMGUARD_MQTT_PASSWORD={receiving}\n"
        f"EMGUARD_MQTT_PUBLISH_PASSWORD={publishing}\n"
    )
    # one file per password for compose secrets / kubectl --from-file: no newline, in a 0700 dir
    assert bundle.mqtt_password.read_text() == receiving
    assert bundle.mqtt_publish_password.read_text() == publishing
    assert _mode(bundle.mqtt_password.parent) == 0o700
    assert _mode(bundle.mqtt_password) == _mode(bundle.mqtt_publish_password) == 0o444
    # every worker login shares its role's password (a pod cannot pick a per-pod Secret key)
    for n in range(8):
        assert by_user[f"emguard-engine-{n}"] == receiving
        assert by_user[f"emguard-engine-{n}-pub"] == publishing


def test_engine_workers_get_their_own_logins(book: OrderBook) -> None:
    """N workers: N receiving and N publishing logins named <engine>-<n>[-pub]; 0 workers: only the pair."""
    assert [a.username for a in plan_accounts(DeviceRegistry.from_orders(book), engine_workers=0)][
        :3
    ] == ["emguard-engine", "emguard-engine-pub", "centre"]
    accounts = _accounts(book, engine_workers=3, engine_user="eng")
    assert {u for u in accounts if u.startswith("eng")} == {
        "eng",
        "eng-pub",
        "eng-0",
        "eng-0-pub",
        "eng-1",
        "eng-1-pub",
        "eng-2",
        "eng-2-pub",
    }
    assert accounts["eng-2"].password_of == "eng"
    assert accounts["eng-2-pub"].password_of == "eng-pub"
    assert (accounts["eng-2"].read, accounts["eng-2"].write) == (
        accounts["eng"].read,
        accounts["eng"].write,
    )
    with pytest.raises(ConfigError, match="workers"):
        _accounts(book, engine_workers=-1)


def test_default_worker_logins_cover_the_statefulsets_pods() -> None:
    """Every pod of the StatefulSet (emguard-engine-0 .. replicas-1) has a login."""
    import yaml

    from engine.tools.deploy_config import DEFAULT_ENGINE_WORKERS

    sts = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "k8s" / "statefulset.yaml").read_text())
    assert sts["spec"]["replicas"] <= DEFAULT_ENGINE_WORKERS


def test_a_device_named_like_an_engine_login_is_refused(tmp_path: Path) -> None:
    """A device id equal to an engine worker's or publishing login would share its client id."""
    for name in ("emguard-engine-pub", "emguard-engine-3"):
        book = load_orders(
            _orders(
                subjects=[
                    {"id": "S-1", "devices": [name]},
                    {"id": "S-2", "devices": ["AM-1002"]},
                ]
            )
        )
        with pytest.raises(ConfigError, match="used twice"):
            write_mosquitto_config(book, tmp_path / "out")


def test_one_owntracks_login_for_two_phones_is_refused(tmp_path: Path) -> None:
    """Two phones on one OwnTracks user would keep knocking each other off: refused, with the fix."""
    book = load_orders(
        _orders(
            protected_persons=[
                {
                    "id": "P-1",
                    "devices": ["VD-2001", "PH-2001", "PH-2002"],
                    "owntracks": [
                        {"topic": "anna/phone", "device": "PH-2001"},
                        {"topic": "anna/tablet", "device": "PH-2002"},
                    ],
                },
                {"id": "P-2", "devices": ["VD-2002"]},
            ]
        )
    )
    with pytest.raises(ConfigError, match="its own OwnTracks user"):
        write_mosquitto_config(book, tmp_path / "out")


def test_rerun_keeps_passwords_and_rotate_replaces_them(book: OrderBook, tmp_path: Path) -> None:
    """Adding a device keeps every provisioned password; rotate=True issues new ones for all."""
    out = tmp_path / "out"
    first = json.loads(write_mosquitto_config(book, out).credentials.read_text())["accounts"]
    grown = load_orders(
        _orders(
            subjects=[
                {"id": "S-1", "devices": ["AM-1001", "AM-1003"]},
                {"id": "S-2", "devices": ["AM-1002"]},
            ]
        )
    )
    second = json.loads(write_mosquitto_config(grown, out).credentials.read_text())["accounts"]
    before = {a["username"]: a["password"] for a in first}
    after = {a["username"]: a["password"] for a in second}
    assert set(after) == set(before) | {"AM-1003"}
    assert all(after[u] == p for u, p in before.items())
    rotated = json.loads(write_mosquitto_config(grown, out, rotate=True).credentials.read_text())[
        "accounts"
    ]
    assert all(a["password"] != after[a["username"]] for a in rotated)


def test_unreadable_credentials_file_is_not_silently_replaced(
    book: OrderBook, tmp_path: Path
) -> None:
    """A damaged credentials.json stops the run (replacing it would lock out every device)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "credentials.json").write_text("{not json")
    with pytest.raises(ConfigError, match="rotate"):
        write_mosquitto_config(book, out)


def test_conf_lists_every_broker_setting_with_its_reason(book: OrderBook, tmp_path: Path) -> None:
    """Each setting is written with a comment saying why, and anonymous access is off."""
    text = write_mosquitto_config(book, tmp_path / "out").config.read_text()
    for s in BROKER_SETTINGS:
        assert f"# {s.why}\n{s.key} {s.value}\n" in text
    assert "allow_anonymous false" in text
    assert "max_queued_messages 100000" in text


# --------------------------------------------------------------------------- CLI function


def test_main_mosquitto_writes_bundle_and_prints_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI entry writes the files, exits 0 and never prints a password."""
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(ORDERS_DOC))
    assert main_mosquitto(orders, tmp_path / "out", None, None) == 0
    out = capsys.readouterr()
    creds = json.loads((tmp_path / "out" / "credentials.json").read_text())["accounts"]
    for c in creds:
        assert c["password"] not in out.out + out.err
    assert "plain TCP" in out.err


def test_main_mosquitto_with_tls_dir_uses_broker_side_paths(tmp_path: Path) -> None:
    """--tls-dir is checked on this host; --certs-dir is what the broker's config names."""
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(ORDERS_DOC))
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        (certs / name).write_text("x")
    code = main_mosquitto(
        orders,
        tmp_path / "out",
        None,
        certs,
        config_dir="/mosquitto/config",
        certs_dir="/mosquitto/certs",
        data_dir="/mosquitto/data",
    )
    assert code == 0
    conf = (tmp_path / "out" / "mosquitto.conf").read_text()
    assert "cafile /mosquitto/certs/ca.crt" in conf
    assert "password_file /mosquitto/config/passwd" in conf
    assert "persistence_location /mosquitto/data/" in conf


@pytest.mark.parametrize("problem", ["missing-orders", "bad-orders", "missing-tls"])
def test_main_mosquitto_reports_problems_with_exit_code_2(
    problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Misconfiguration exits 2 with a message naming what to fix, and writes nothing."""
    orders = tmp_path / "orders.json"
    tls = None
    if problem == "bad-orders":
        orders.write_text('{"v": 1, "orders": [{"id": "O-1", "subject": "nobody"}]}')
    elif problem == "missing-tls":
        orders.write_text(json.dumps(ORDERS_DOC))
        tls = tmp_path / "no-certs"
    assert main_mosquitto(orders, tmp_path / "out", None, tls) == 2
    err = capsys.readouterr().err
    assert {"missing-orders": "not found", "bad-orders": "nobody", "missing-tls": "ca.crt"}[
        problem
    ] in err
    assert not (tmp_path / "out").exists()


def test_main_mosquitto_reports_an_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An --out that cannot be created is an exit-2 message, not a traceback."""
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(ORDERS_DOC))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main_mosquitto(orders, blocker / "out", None, None) == 2
    assert "a-file" in capsys.readouterr().err
