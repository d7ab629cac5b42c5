"""Retention: forget the victim's positions in the audit log without breaking the chain.

The victim's location is the most sensitive datum in the system and is kept
no longer than needed.  Because each record's hash covers its body only
through ``body_sha256``, a body can be replaced by its digest later and every
hash still verifies: ``redact_victim_fixes`` does that for protected persons'
fixes older than a cut-off, except those an alert may need as evidence (from
``margin_s`` before the episode of any alert naming her to ``margin_s`` after
its last change).  The rewrite goes to ``<log>.redacting``, is verified whole,
and only then replaces the log, so run it on a log no engine is appending to
(e.g. after rotating).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.core.orders import OrderBook
from engine.evidence.chain import GENESIS, EvidenceError, verify_records
from engine.evidence.store import JsonlStore, read_records


@dataclass(frozen=True, slots=True)
class RedactionSummary:
    """How many victim fixes were forgotten and how many kept as alert evidence."""

    redacted: int
    kept_for_alerts: int
    head_hash: str


def _victim_devices(book: OrderBook) -> dict[str, str]:
    return {d: p.id for p in book.protected_persons.values() for d in p.devices}


def redact_victim_fixes(
    log: str | Path, book: OrderBook, before_t: float, *, margin_s: float = 600.0
) -> RedactionSummary:
    """Replace bodies of protected persons' fixes with device time < ``before_t`` by their digest."""
    log = Path(log)
    devices = _victim_devices(book)
    windows: dict[str, list[tuple[float, float]]] = {}
    spans: dict[str, tuple[str, float, float]] = {}
    for rec in read_records(log):
        body = rec.body
        if body is None or rec.kind not in ("alert_change", "action") or "alert" not in body:
            continue
        person = body["alert"].get("protected_person")
        if not person:
            continue
        start = float(body["episode_start"])
        old = spans.get(body["alert_id"])
        lo = min(start, old[1]) if old else start
        hi = max(float(body["at"]), old[2]) if old else float(body["at"])
        spans[body["alert_id"]] = (person, lo, hi)
    for person, lo, hi in spans.values():
        windows.setdefault(person, []).append((lo - margin_s, hi + margin_s))

    tmp = Path(f"{log}.redacting")
    tmp.unlink(missing_ok=True)
    redacted = kept = 0
    with JsonlStore(tmp) as out:
        for rec in read_records(log):
            body = rec.body
            if rec.kind == "fix" and body is not None and body.get("device") in devices:
                t = float(body["t"])
                person = devices[body["device"]]
                if t < before_t:
                    if any(lo <= t <= hi for lo, hi in windows.get(person, ())):
                        kept += 1
                    else:
                        rec = rec.redact()
                        redacted += 1
            out.write(rec)
    try:
        checked = verify_records(read_records(tmp), prev_hash=GENESIS, first_seq=0)
        original = verify_records(read_records(log), prev_hash=GENESIS, first_seq=0)
        if (checked.count, checked.last_hash) != (original.count, original.last_hash):
            raise EvidenceError("redaction changed the chain's length or head; log left unchanged")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(log)
    return RedactionSummary(redacted, kept, checked.last_hash or GENESIS)
