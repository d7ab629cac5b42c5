"""Evidence bundles: everything about one alert in one directory, provably untampered.

``export_bundle`` writes::

    manifest.json   version, alert, anchors (segment and log head), sha256 of every file
    chain.jsonl     the contiguous chain segment covering the alert; records of other
                    alerts and devices are redacted (body replaced by its digest)
    alert.json      the alert's final contract §5 form with its full history
    history.jsonl   every change and action of the alert, and messages sent because of it
    fixes.jsonl     the fixes of the devices involved, with accuracy, source, acceptance
    order.json      the order in force (canonical form; its digest is in the chain)
    zones.geojson   its zones, corridors and time-window areas
    map.png         a rendered map of zones and tracks (an illustration)
    README.txt      how to verify

``verify_bundle`` recomputes every record hash, checks continuity and the
anchors, re-derives ``alert.json``, ``history.jsonl``, ``fixes.jsonl`` and
``zones.geojson`` from the chain and ``order.json`` and compares them byte for
byte, checks ``order.json`` against the digest chained with the alert, and
every file against the manifest.  The first problem is reported.  To prove
the bundle against a rewrite of the whole chain, compare the anchor hashes
with an independent copy: the live log (``verify --log``) or a head hash
written down earlier (``emguard evidence head``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices.timeutil import format_time
from engine.core.orders import OrderBook
from engine.evidence.chain import (
    SCHEME,
    ChainBroken,
    EvidenceError,
    Record,
    canonical_json,
    sha256_hex,
    verify_records,
)
from engine.evidence.orderdoc import order_digest, order_document, zones_geojson
from engine.evidence.store import read_records

BUNDLE_VERSION = 1
DERIVED = ("alert.json", "history.jsonl", "fixes.jsonl")
ALERT_KINDS = ("alert_change", "action")


@dataclass(frozen=True, slots=True)
class BundleSummary:
    """What an export or a verification covered."""

    alert_id: str
    first_seq: int
    last_seq: int
    records: int
    redacted: int
    fixes: int
    history: int
    files: tuple[str, ...]


def _is_alert_record(rec: Record, alert_id: str) -> bool:
    body = rec.body
    return (
        body is not None
        and rec.kind in ALERT_KINDS
        and body.get("type", "operator") == "operator"
        and body.get("alert_id") == alert_id
    )


def _is_alert_message(rec: Record, alert_id: str) -> bool:
    body = rec.body
    if body is None or rec.kind != "action" or body.get("type") != "message":
        return False
    payload = body.get("payload") or {}
    return alert_id in (body.get("step_alerts") or ()) or payload.get("alert_id") == alert_id


# --- derivations (pure functions of the chain segment; verify recomputes them) -----------------
def derive_history(records: Iterable[Record], alert_id: str) -> list[dict[str, Any]]:
    """One line per change or action of the alert, and per message sent because of it."""
    out: list[dict[str, Any]] = []
    for rec in records:
        body = rec.body
        if body is None:
            continue
        if _is_alert_record(rec, alert_id):
            wire = body["alert"]
            entry = body.get("history_entry") or {}
            out.append(
                {
                    "seq": rec.seq,
                    "record": rec.kind,
                    "at": format_time(body["at"]),
                    "change": body["change"],
                    "state": wire["state"],
                    "level": wire["level"],
                    "by": entry.get("by"),
                    "note": entry.get("note"),
                    "device_time": wire["device_time"],
                    "distance_m": wire.get("distance_m"),
                    "certainty": wire.get("certainty"),
                    "late": wire.get("late"),
                    "detail": wire.get("detail"),
                    "evidence": wire.get("evidence", {}).get("fixes", []),
                }
            )
        elif _is_alert_message(rec, alert_id):
            out.append(
                {
                    "seq": rec.seq,
                    "record": rec.kind,
                    "at": format_time(body["at"]),
                    "message": body["channel"],
                    "topic": body["topic"],
                    "payload": body["payload"],
                }
            )
    return out


def derive_alert(records: Iterable[Record], alert_id: str) -> dict[str, Any]:
    """The alert's last contract §5 form plus the history entries of all its changes."""
    last: dict[str, Any] | None = None
    history = []
    for rec in records:
        if _is_alert_record(rec, alert_id):
            assert rec.body is not None
            last = dict(rec.body["alert"])
            entry = rec.body.get("history_entry")
            if entry:
                history.append({**entry, "at": format_time(entry["at"])})
    if last is None:
        raise EvidenceError(f"alert {alert_id} has no records in the chain segment")
    last["history"] = history
    return last


def derive_fixes(records: Iterable[Record]) -> list[dict[str, Any]]:
    """Every fix shown in the segment (unredacted), in chain order, with readable times."""
    out = []
    for rec in records:
        if rec.kind == "fix" and rec.body is not None:
            out.append({"chain_seq": rec.seq, "time": format_time(rec.body["t"]), **rec.body})
    return out


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(canonical_json(r) + b"\n" for r in rows)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


# --- export -----------------------------------------------------------------------------------
def export_bundle(
    log: str | Path,
    alert_id: str,
    out_dir: str | Path,
    book: OrderBook | None = None,
    *,
    margin_s: float = 600.0,
    crs: str = "EPSG:28992",
    render: bool = True,
) -> BundleSummary:
    """Write the bundle for ``alert_id`` from an evidence log (verified whole first)."""
    log = Path(log)
    full = verify_records(read_records(log), prev_hash="0" * 64, first_seq=0)
    alert_recs = [r for r in read_records(log) if _is_alert_record(r, alert_id)]
    if not alert_recs:
        raise EvidenceError(f"alert {alert_id} is not in {log}")
    wires = [r.body["alert"] for r in alert_recs if r.body is not None]
    t_lo = min(float(r.body["episode_start"]) for r in alert_recs if r.body) - margin_s
    t_hi = max(float(r.body["at"]) for r in alert_recs if r.body) + margin_s
    devices = _devices(wires, book)
    keep: set[int] = set()
    for rec in read_records(log):
        body = rec.body
        if body is None:
            continue
        if rec.kind == "fix":
            if body["device"] in devices and t_lo <= float(body["t"]) <= t_hi:
                keep.add(rec.seq)
        elif _is_alert_record(rec, alert_id) or _is_alert_message(rec, alert_id):
            keep.add(rec.seq)
    lo, hi = min(keep), max(keep)
    segment = [r if r.seq in keep else r.redact() for r in read_records(log) if lo <= r.seq <= hi]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {"chain.jsonl": b"".join(r.line().encode() + b"\n" for r in segment)}
    files.update(_derived(segment, alert_id))
    order_id = wires[-1].get("order")
    chained = _chained_order_digest(segment, alert_id)
    order_doc = None
    if book is not None and order_id in book.orders:
        order = book.orders[order_id]
        if chained is not None and order_digest(order) != chained:
            raise EvidenceError(
                f"the orders file's {order_id} differs from the order chained with alert "
                f"{alert_id} (digest {chained[:12]}…): export with the orders file in force then"
            )
        order_doc = order_document(order)
        files["order.json"] = _json(order_doc)
        files["zones.geojson"] = _json(zones_geojson(order_doc))
    if render:
        from engine.evidence.render import render_map

        files["map.png"] = render_map(
            derive_fixes(segment),
            zones_geojson(order_doc) if order_doc else None,
            derive_alert(segment, alert_id),
            crs=crs,
        )
    files["README.txt"] = _readme(alert_id).encode()
    manifest = {
        "emguard_evidence_bundle": BUNDLE_VERSION,
        "alert_id": alert_id,
        "scheme": SCHEME,
        "anchors": {
            "first_seq": segment[0].seq,
            "prev_hash": segment[0].prev_hash,
            "last_seq": segment[-1].seq,
            "last_hash": segment[-1].hash,
            "log_head_seq": full.last_seq,
            "log_head_hash": full.last_hash,
        },
        "order": order_id,
        "order_sha256": chained,
        "window": {"from": format_time(t_lo), "to": format_time(t_hi)},
        "devices": sorted(devices),
        "files": {name: sha256_hex(data) for name, data in sorted(files.items())},
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "manifest.json").write_bytes(_json(manifest))
    return _summary(alert_id, segment, files)


def _devices(wires: list[dict[str, Any]], book: OrderBook | None) -> set[str]:
    devices: set[str] = set()
    for w in wires:
        if w.get("device"):
            devices.add(w["device"])
        for key in w.get("evidence", {}).get("fixes", []):
            devices.add(str(key).rsplit(":", 1)[0])
    last = wires[-1]
    if book is not None:
        subject = book.subjects.get(last.get("subject") or "")
        person = book.protected_persons.get(last.get("protected_person") or "")
        for who in (subject, person):
            if who is not None:
                devices.update(who.devices)
    return devices


def _chained_order_digest(records: Iterable[Record], alert_id: str) -> str | None:
    digest = None
    for rec in records:
        if (
            _is_alert_record(rec, alert_id)
            and rec.body is not None
            and rec.body.get("order_sha256")
        ):
            digest = rec.body["order_sha256"]
    return digest


def _derived(segment: list[Record], alert_id: str) -> dict[str, bytes]:
    return {
        "alert.json": _json(derive_alert(segment, alert_id)),
        "history.jsonl": _jsonl(derive_history(segment, alert_id)),
        "fixes.jsonl": _jsonl(derive_fixes(segment)),
    }


def _summary(alert_id: str, segment: list[Record], files: dict[str, Any]) -> BundleSummary:
    return BundleSummary(
        alert_id=alert_id,
        first_seq=segment[0].seq,
        last_seq=segment[-1].seq,
        records=len(segment),
        redacted=sum(r.redacted for r in segment),
        fixes=len(derive_fixes(segment)),
        history=len(derive_history(segment, alert_id)),
        files=tuple(sorted(files)),
    )


def _readme(alert_id: str) -> str:
    return (
        f"emguard evidence bundle for alert {alert_id}\n\n"
        "Verify:   emguard evidence verify <this directory> [--log <live audit log>]\n\n"
        "chain.jsonl is a contiguous segment of the engine's hash-chained audit log.\n"
        f"Scheme: {SCHEME};\nbody_sha256 = sha256(canonical JSON of body); canonical = sorted keys,\n"
        "no spaces, UTF-8. Redacted records (other cases) keep body_sha256 instead of body.\n"
        "alert.json, history.jsonl and fixes.jsonl are derived from chain.jsonl; zones.geojson\n"
        "from order.json, whose sha256 is chained with the alert as order_sha256. map.png is an\n"
        "illustration; its digest is in manifest.json. Compare manifest anchors.last_hash (or\n"
        "log_head_hash) with an independent copy of the log to rule out a rewritten chain.\n"
    )


# --- verify -----------------------------------------------------------------------------------
class BundleInvalid(EvidenceError):
    """The bundle does not verify; the message names the first broken record or file."""


def verify_bundle(bundle: str | Path, *, log: str | Path | None = None) -> BundleSummary:
    """Prove a bundle untampered (see the module docstring); ``BundleInvalid`` otherwise."""
    root = Path(bundle)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleInvalid(f"{root}: no readable manifest.json ({exc})") from exc
    if manifest.get("emguard_evidence_bundle") != BUNDLE_VERSION:
        raise BundleInvalid(f"{root}: not an emguard evidence bundle of version {BUNDLE_VERSION}")
    alert_id = str(manifest["alert_id"])
    anchors = manifest["anchors"]
    segment = _read_segment(root / "chain.jsonl", int(anchors["first_seq"]))
    try:
        result = verify_records(
            segment, prev_hash=anchors["prev_hash"], first_seq=anchors["first_seq"]
        )
    except ChainBroken as exc:
        raise BundleInvalid(f"chain.jsonl {exc}") from exc
    if result.last_seq != anchors["last_seq"] or result.last_hash != anchors["last_hash"]:
        raise BundleInvalid(
            f"chain.jsonl ends at record {result.last_seq}, the manifest anchors record "
            f"{anchors['last_seq']} with a different hash: records were removed or added"
        )
    files: dict[str, str] = manifest["files"]
    for name, digest in sorted(files.items()):
        path = root / name
        if not path.is_file():
            raise BundleInvalid(f"{name}: listed in the manifest but missing")
        if sha256_hex(path.read_bytes()) != digest:
            raise BundleInvalid(f"{name}: sha256 differs from the manifest (file changed)")
    for name, data in _derived(segment, alert_id).items():
        if name not in files or (root / name).read_bytes() != data:
            raise BundleInvalid(f"{name}: does not match what the chain records")
    chained = _chained_order_digest(segment, alert_id)
    if "order.json" in files:
        doc = json.loads((root / "order.json").read_text(encoding="utf-8"))
        if chained is not None and sha256_hex(canonical_json(doc)) != chained:
            raise BundleInvalid(
                "order.json: its digest differs from order_sha256 chained with the alert"
            )
        if (root / "zones.geojson").read_bytes() != _json(zones_geojson(doc)):
            raise BundleInvalid("zones.geojson: does not match order.json")
    if log is not None:
        _against_log(segment, Path(log))
    return _summary(alert_id, segment, files)


def _read_segment(path: Path, first_seq: int) -> list[Record]:
    out: list[Record] = []
    try:
        out.extend(read_records(path))
    except ChainBroken as exc:
        seq = exc.seq if exc.seq is not None else first_seq + len(out)
        raise BundleInvalid(f"chain.jsonl record {seq}: unreadable ({exc.reason})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleInvalid(
            f"chain.jsonl record {first_seq + len(out)}: unreadable ({exc})"
        ) from exc
    if not out:
        raise BundleInvalid("chain.jsonl: empty")
    return out


def _against_log(segment: list[Record], log: Path) -> None:
    """Every segment record has the same hash in the live log (an independent copy)."""
    want = {r.seq: r.hash for r in segment}
    seen = 0
    for rec in read_records(log):
        if rec.seq in want:
            if want[rec.seq] != rec.hash:
                raise BundleInvalid(f"record {rec.seq}: hash differs from the live log {log}")
            seen += 1
    if seen != len(want):
        raise BundleInvalid(f"the live log {log} lacks {len(want) - seen} of the segment's records")
