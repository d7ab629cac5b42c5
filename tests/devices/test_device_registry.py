"""Tests for devices.registry: devices from orders, registry-file overrides, misconfiguration errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.errors import DeviceError, RegistryError
from devices.registry import DeviceInfo, DeviceRegistry
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders

ORDERS: dict[str, Any] = {
    "v": 1,
    "subjects": [{"id": "S-1", "devices": ["AM-1001"]}],
    "protected_persons": [
        {"id": "P-1", "devices": ["VD-2001", "VP-3001"],
         "owntracks": [{"topic": "anna/phone", "device": "VP-3001"}]},
        {"id": "P-2", "devices": ["VD-2002"]},
    ],
    "orders": [],
}  # fmt: skip


@pytest.fixture
def book() -> OrderBook:
    return load_orders(ORDERS)


def test_devices_from_orders_get_roles_owners_and_defaults(book: OrderBook) -> None:
    """Without a file, every device in the orders is registered with its role and owner."""
    reg = DeviceRegistry.from_orders(book)
    assert [d.device_id for d in reg.devices()] == ["AM-1001", "VD-2001", "VD-2002", "VP-3001"]
    assert reg.get("AM-1001") == DeviceInfo("AM-1001", "ankle_monitor", "S-1", 60.0, 180.0)
    assert reg.get("VP-3001") == DeviceInfo(
        "VP-3001", "victim_phone", "P-1", 60.0, 180.0, "anna/phone"
    )
    assert reg.roles() == {
        "AM-1001": "ankle_monitor",
        "VD-2001": "victim_device",
        "VD-2002": "victim_device",
        "VP-3001": "victim_phone",
    }
    assert reg.owntracks_map() == {"anna/phone": "VP-3001"}
    assert reg.get("nope") is None and "AM-1001" in reg and len(reg) == 4


def test_silence_limit_defaults_to_three_intervals() -> None:
    """silent_after_s left out is three fix intervals."""
    info = DeviceInfo("X", "victim_device", "P", fix_interval_s=20)
    assert info.silent_after_s == 60.0 and info.silence_limit_s == 60.0
    assert DeviceInfo("X", "victim_device", "P", 20, 45).silent_after_s == 45


def test_registry_file_overrides_and_adds(book: OrderBook, tmp_path: Path) -> None:
    """A registry file sets intervals, silence limits and OwnTracks logins, and adds devices."""
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"v": 1, "devices": [
        {"id": "AM-1001", "fix_interval_s": 30},
        {"id": "VD-2001", "silent_after_s": 900},
        {"id": "VD-2002", "owntracks": "bert/pixel"},
        {"id": "AM-1009", "role": "ankle_monitor", "owner": "S-1", "fix_interval_s": 15,
         "silent_after_s": 40},
    ]}))  # fmt: skip
    reg = DeviceRegistry.load(path, book)
    assert reg.get("AM-1001") == DeviceInfo("AM-1001", "ankle_monitor", "S-1", 30.0, 90.0)
    assert reg.get("VD-2001") == DeviceInfo("VD-2001", "victim_device", "P-1", 60.0, 900.0)
    assert reg.get("VD-2002") == DeviceInfo(
        "VD-2002", "victim_phone", "P-2", 60.0, 180.0, "bert/pixel"
    )
    assert reg.get("AM-1009") == DeviceInfo("AM-1009", "ankle_monitor", "S-1", 15.0, 40.0)
    assert reg.owntracks_map() == {"anna/phone": "VP-3001", "bert/pixel": "VD-2002"}


def test_mapping_source_is_accepted(book: OrderBook) -> None:
    """The overrides may be an already-parsed JSON object."""
    reg = DeviceRegistry.from_orders(book, {"v": 1, "devices": []})
    assert len(reg) == 4


BAD_FILES: list[tuple[str, Any, str]] = [
    ("not an object", [1], "top level"),
    ("wrong version", {"v": 2, "devices": []}, "version 2"),
    ("devices not a list", {"v": 1, "devices": {}}, "'devices' must be a list"),
    ("entry not object", {"v": 1, "devices": ["AM-1"]}, "devices[0] must be an object"),
    ("id missing", {"v": 1, "devices": [{"role": "ankle_monitor"}]}, "'id'"),
    ("id with slash", {"v": 1, "devices": [{"id": "a/b"}]}, "'id'"),
    ("duplicate", {"v": 1, "devices": [{"id": "AM-1001"}, {"id": "AM-1001"}]}, "listed twice"),
    ("unknown key", {"v": 1, "devices": [{"id": "AM-1001", "intervl": 5}]}, "'intervl'"),
    ("bad role", {"v": 1, "devices": [{"id": "AM-1001", "role": "watch"}]}, "'watch'"),
    ("new device no owner", {"v": 1, "devices": [{"id": "X", "role": "victim_device"}]}, "'owner'"),
    ("owner contradicts", {"v": 1, "devices": [{"id": "VD-2001", "owner": "P-2"}]}, "contradicts"),
    ("monitor of victim", {"v": 1, "devices": [{"id": "VD-2001", "role": "ankle_monitor"}]},
     "must be a subject"),
    ("victim role for subject", {"v": 1, "devices": [{"id": "X", "role": "victim_device",
     "owner": "S-1"}]}, "must be a protected person"),
    ("owntracks on monitor", {"v": 1, "devices": [{"id": "AM-1001", "role": "ankle_monitor",
     "owntracks": "a/b"}]}, "only a victim_phone"),
    ("owntracks bad key", {"v": 1, "devices": [{"id": "VD-2001", "owntracks": "anna"}]},
     "'user/device'"),
    ("owntracks wildcard", {"v": 1, "devices": [{"id": "VD-2001", "owntracks": "a/+"}]},
     "'user/device'"),
    ("owntracks taken", {"v": 1, "devices": [{"id": "VD-2001", "owntracks": "anna/phone"}]},
     "mapped to both"),
    ("interval zero", {"v": 1, "devices": [{"id": "AM-1001", "fix_interval_s": 0}]},
     "'fix_interval_s'"),
    ("interval bool", {"v": 1, "devices": [{"id": "AM-1001", "fix_interval_s": True}]},
     "'fix_interval_s'"),
    ("silence text", {"v": 1, "devices": [{"id": "AM-1001", "silent_after_s": "1h"}]},
     "'silent_after_s'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "needle"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_bad_registry_fails_with_message(
    book: OrderBook, tmp_path: Path, doc: Any, needle: str
) -> None:
    """A misconfigured registry file raises RegistryError naming the file and what to fix."""
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RegistryError) as info:
        DeviceRegistry.load(path, book)
    assert needle in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, DeviceError)


@pytest.mark.parametrize(("content", "needle"), [(None, "not found"), ("{", "cannot read")])
def test_unreadable_registry_file(
    book: OrderBook, tmp_path: Path, content: str | None, needle: str
) -> None:
    """A missing or malformed registry file is a RegistryError with the path."""
    path = tmp_path / "reg.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RegistryError) as info:
        DeviceRegistry.load(path, book)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_owntracks_map_feeds_decoder(book: OrderBook) -> None:
    """The registry's OwnTracks map is what decode_message needs to accept a phone location."""
    from devices.decode import decode_message

    reg = DeviceRegistry.from_orders(book)
    payload = b'{"_type":"location","lat":51.9,"lon":4.4,"acc":10,"tst":1795428900}'
    d = decode_message(
        "owntracks/anna/phone", payload, 1795428903.0, owntracks_map=reg.owntracks_map()
    )
    assert [f.device for f in d.fixes] == ["VP-3001"]
