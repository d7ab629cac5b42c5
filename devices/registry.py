"""Which devices exist, what they are, who carries them and how often they report.

The orders file (contract §4) already says which devices belong to which
subject or protected person, so the registry is built from the orders (``DeviceOwners``);
an optional registry file adds what orders do not say (fix interval, silence
limit, OwnTracks login, victim device vs phone).  The deploy tooling generates
broker accounts and ACLs from ``roles()`` and ``owntracks_map()``.

Registry file format (JSON, version 1)::

    {"v": 1,
     "devices": [
       {"id": "AM-1001", "fix_interval_s": 30},
       {"id": "VP-3001", "role": "victim_phone", "owner": "P-1",
        "owntracks": "anna/phone", "silent_after_s": 900}]}

Per entry: ``id`` (required); ``role`` (``ankle_monitor``, ``victim_device``
or ``victim_phone``); ``owner`` (subject or protected-person id);
``fix_interval_s`` (> 0, default 60); ``silent_after_s`` (> 0, default
3 × the fix interval); ``owntracks`` (``"user/device"``, makes the device a
victim phone).  For a device named in the orders ``role`` and ``owner`` may be
left out and, if given, must agree with the orders (an ankle monitor belongs
to a subject, a victim device or phone to a protected person).  A device that
the orders do not name needs both.  Any inconsistency raises ``RegistryError``
at start-up, naming the entry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from devices.errors import RegistryError


class DeviceOwners(Protocol):
    """What the registry reads from the orders: who carries which device.

    The orders model (``engine.core.orders.OrderBook``) provides it; devices/ sits below the
    engine, so the registry names only the four facts it needs.
    """

    @property
    def owntracks(self) -> Mapping[str, str]: ...
    @property
    def device_owner(self) -> Mapping[str, tuple[str, str]]: ...
    @property
    def subjects(self) -> Mapping[str, Any]: ...
    @property
    def protected_persons(self) -> Mapping[str, Any]: ...


Role = Literal["ankle_monitor", "victim_device", "victim_phone"]
ROLES: frozenset[str] = frozenset({"ankle_monitor", "victim_device", "victim_phone"})
DEFAULT_FIX_INTERVAL_S = 60.0
SILENCE_FACTOR = 3.0  # silent after this many missed fix intervals, unless configured
_ENTRY_KEYS = frozenset({"id", "role", "owner", "fix_interval_s", "silent_after_s", "owntracks"})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One registered device.  ``silent_after_s`` left as None is filled in as 3 × the fix interval."""

    device_id: str
    role: Role
    owner: str
    fix_interval_s: float = DEFAULT_FIX_INTERVAL_S
    silent_after_s: float | None = None
    owntracks: str | None = None  # "user/device" for a victim phone running OwnTracks

    def __post_init__(self) -> None:
        if self.silent_after_s is None:
            object.__setattr__(self, "silent_after_s", SILENCE_FACTOR * self.fix_interval_s)

    @property
    def silence_limit_s(self) -> float:
        """Seconds without any message after which the device counts as silent."""
        return cast(float, self.silent_after_s)


class DeviceRegistry:
    """Registered devices by id, plus the OwnTracks ``user/device`` -> device id map."""

    def __init__(self, devices: Mapping[str, DeviceInfo]) -> None:
        self._devices = dict(sorted(devices.items()))
        self._owntracks: dict[str, str] = {}
        for info in self._devices.values():
            if info.owntracks is None:
                continue
            other = self._owntracks.get(info.owntracks)
            if other is not None and other != info.device_id:
                raise RegistryError(
                    f"OwnTracks {info.owntracks!r} is mapped to both {other} and {info.device_id}"
                )
            self._owntracks[info.owntracks] = info.device_id

    @classmethod
    def from_orders(
        cls, book: DeviceOwners, overrides: str | Path | Mapping[str, Any] | None = None
    ) -> DeviceRegistry:
        """Every device named in the orders, with defaults, then the registry file applied."""
        phones = {dev: key for key, dev in book.owntracks.items()}
        devices: dict[str, DeviceInfo] = {}
        for device, (kind, person) in book.device_owner.items():
            if kind == "subject":
                devices[device] = DeviceInfo(device, "ankle_monitor", person)
            else:
                role: Role = "victim_phone" if device in phones else "victim_device"
                devices[device] = DeviceInfo(device, role, person, owntracks=phones.get(device))
        if overrides is None:
            return cls(devices)
        for where, entry in _entries(overrides):
            info = _apply(entry, devices.get(entry["id"]), book, where)
            devices[info.device_id] = info
        try:
            return cls(devices)
        except RegistryError as exc:
            label = "registry" if isinstance(overrides, Mapping) else str(overrides)
            raise RegistryError(f"{label}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path, book: DeviceOwners) -> DeviceRegistry:
        """``from_orders(book, path)`` with the file first, as the deploy tooling calls it."""
        return cls.from_orders(book, path)

    def get(self, device_id: str) -> DeviceInfo | None:
        """The device's registration, or None for an unknown device."""
        return self._devices.get(device_id)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __len__(self) -> int:
        return len(self._devices)

    def devices(self) -> Iterator[DeviceInfo]:
        """All registered devices in id order."""
        return iter(self._devices.values())

    def roles(self) -> dict[str, Role]:
        """Device id -> role, for generating broker accounts."""
        return {d: i.role for d, i in self._devices.items()}

    def owntracks_map(self) -> dict[str, str]:
        """OwnTracks ``"user/device"`` -> device id, for ``decode_message(owntracks_map=...)``."""
        return dict(self._owntracks)


def _entries(source: str | Path | Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(source, Mapping):
        doc: Any = source
        where = "registry"
    else:
        where = str(source)
        try:
            doc = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise RegistryError(f"{where}: file not found") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{where}: cannot read as JSON ({exc})") from exc
    if not isinstance(doc, Mapping):
        raise RegistryError(f"{where}: top level must be a JSON object")
    if doc.get("v") != 1 or isinstance(doc.get("v"), bool):
        raise RegistryError(f"{where}: unsupported registry version {doc.get('v')!r} (expected 1)")
    entries = doc.get("devices", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{where}: 'devices' must be a list")
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        ctx = f"{where}: devices[{i}]"
        if not isinstance(entry, dict):
            raise RegistryError(f"{ctx} must be an object")
        device = entry.get("id")
        if not isinstance(device, str) or not device or any(c in device for c in "/+#"):
            raise RegistryError(f"{ctx}: 'id' must be a device id without '/', '+' or '#'")
        if device in seen:
            raise RegistryError(f"{ctx}: device {device} is listed twice")
        seen.add(device)
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise RegistryError(f"{ctx} ({device}): unknown field(s) {sorted(unknown)}")
        yield f"{where}: device {device}", entry


def _apply(
    entry: Mapping[str, Any], base: DeviceInfo | None, book: DeviceOwners, where: str
) -> DeviceInfo:
    device = cast(str, entry["id"])
    role = entry.get("role", base.role if base else None)
    owner = entry.get("owner", base.owner if base else None)
    owntracks = entry.get("owntracks", base.owntracks if base else None)
    if owntracks is not None and "role" not in entry:
        role = "victim_phone"
    if role not in ROLES:
        raise RegistryError(f"{where}: 'role' must be one of {sorted(ROLES)}, not {role!r}")
    if not isinstance(owner, str) or not owner:
        raise RegistryError(f"{where}: 'owner' (subject or protected person id) is required")
    if base is not None and owner != base.owner:
        raise RegistryError(f"{where}: owner {owner!r} contradicts the orders ({base.owner!r})")
    if role == "ankle_monitor" and owner not in book.subjects:
        raise RegistryError(f"{where}: an ankle monitor's owner must be a subject, not {owner!r}")
    if role != "ankle_monitor" and owner not in book.protected_persons:
        raise RegistryError(f"{where}: a {role}'s owner must be a protected person, not {owner!r}")
    if owntracks is not None:
        if role != "victim_phone":
            raise RegistryError(f"{where}: only a victim_phone can have an OwnTracks login")
        _check_owntracks_key(owntracks, where)
    interval = DEFAULT_FIX_INTERVAL_S if base is None else base.fix_interval_s
    silent = None if base is None else base.silent_after_s
    if "fix_interval_s" in entry:
        interval = _positive(entry["fix_interval_s"], where, "fix_interval_s")
        silent = None  # the default silence limit follows the new interval
    if "silent_after_s" in entry:
        silent = _positive(entry["silent_after_s"], where, "silent_after_s")
    return DeviceInfo(device, cast(Role, role), owner, interval, silent, owntracks)


def _check_owntracks_key(key: object, where: str) -> None:
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 2 or not all(parts) or any(c in key for c in "+#"):  # type: ignore[operator]
        raise RegistryError(f"{where}: 'owntracks' must look like 'user/device', not {key!r}")


def _positive(value: object, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise RegistryError(
            f"{where}: {name!r} must be a positive number of seconds, not {value!r}"
        )
    return float(value)
