"""Full-history export and import: move the whole audit log to a new platform without loss.

The export is one JSON Lines file: a header line
``{"emguard_history": 1, "scheme": ..., "records": N, "head_seq": ..., "head_hash": ...}``
then every record exactly as stored (canonical JSON).  The whole chain is
verified before it is written and again before it is imported; the import
refuses a non-empty target, so a history can never be spliced into another.
``rebuild_alerts`` turns the records back into the alert archive (each alert's
last form and full history), which is what a new platform needs to go on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.evidence.chain import (
    GENESIS,
    SCHEME,
    ChainBroken,
    EvidenceError,
    Record,
    verify_records,
)
from engine.evidence.store import JsonlStore, read_records

HISTORY_VERSION = 1


@dataclass(frozen=True, slots=True)
class HistorySummary:
    """Records moved and the head they end at."""

    records: int
    head_seq: int | None
    head_hash: str


def export_history(log: str | Path, out: str | Path) -> HistorySummary:
    """Verify the whole log and write header + records to ``out``."""
    checked = verify_records(read_records(log), prev_hash=GENESIS, first_seq=0)
    header = {
        "emguard_history": HISTORY_VERSION,
        "scheme": SCHEME,
        "records": checked.count,
        "head_seq": checked.last_seq,
        "head_hash": checked.last_hash or GENESIS,
    }
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps(header, sort_keys=True, separators=(",", ":")) + "\n")
        for rec in read_records(log):
            fh.write(rec.line() + "\n")
    return HistorySummary(checked.count, checked.last_seq, checked.last_hash or GENESIS)


def _open_history(path: str | Path) -> tuple[dict[str, Any], Iterator[Record]]:
    """The header and a stream of the records after it (structure-checked, not yet verified)."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
    try:
        header = json.loads(first)
    except ValueError as exc:
        raise EvidenceError(f"{path}: first line is not a history header ({exc})") from exc
    if not isinstance(header, dict) or header.get("emguard_history") != HISTORY_VERSION:
        raise EvidenceError(f"{path}: not an emguard history export of version {HISTORY_VERSION}")
    if header.get("scheme") != SCHEME:
        raise EvidenceError(f"{path}: unknown hash scheme {header.get('scheme')!r}")

    def records() -> Iterator[Record]:
        with open(path, encoding="utf-8") as fh:
            fh.readline()
            for n, line in enumerate(fh, 2):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise ChainBroken(None, f"{path}:{n}: not JSON ({exc})") from exc
                yield Record.from_json(obj)

    return header, records()


def _check_header(path: str | Path, header: dict[str, Any], count: int, head: str | None) -> None:
    if count != header.get("records") or (head or GENESIS) != header.get("head_hash"):
        raise ChainBroken(
            None,
            f"{path}: holds {count} records ending in {head}, the header says "
            f"{header.get('records')} ending in {header.get('head_hash')}: records lost or added",
        )


def verify_history(path: str | Path) -> HistorySummary:
    """Verify a history export: every hash, continuity from genesis, and the header's totals."""
    header, records = _open_history(path)
    checked = verify_records(records, prev_hash=GENESIS, first_seq=0)
    _check_header(path, header, checked.count, checked.last_hash)
    return HistorySummary(checked.count, checked.last_seq, checked.last_hash or GENESIS)


def import_history(src: str | Path, log: str | Path) -> HistorySummary:
    """Write a verified history export into a new, empty evidence log (byte-identical records).

    Records are verified while they are copied into ``<log>.importing``, which
    replaces ``log`` only when the whole history verified.
    """
    target_path = Path(log)
    if target_path.exists() and target_path.stat().st_size > 0:
        raise EvidenceError(f"{log}: not empty; import only into a new evidence log")
    header, records = _open_history(src)
    tmp = Path(f"{target_path}.importing")
    tmp.unlink(missing_ok=True)
    store = JsonlStore(tmp)

    def copy() -> Iterator[Record]:
        for rec in records:
            store.write(rec)
            yield rec

    try:
        checked = verify_records(copy(), prev_hash=GENESIS, first_seq=0)
        _check_header(src, header, checked.count, checked.last_hash)
        store.fsync = True
        store.close()
    except BaseException:
        store.close()
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target_path)
    return HistorySummary(checked.count, checked.last_seq, checked.last_hash or GENESIS)


def rebuild_alerts(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """Each alert's last contract §5 form with its full history, from the chain alone."""
    alerts: dict[str, dict[str, Any]] = {}
    for rec in records:
        body = rec.body
        if body is None or rec.kind not in ("alert_change", "action"):
            continue
        if body.get("type", "operator") != "operator" or "alert" not in body:
            continue
        aid = body["alert_id"]
        prev = alerts.get(aid, {"history": []})
        alerts[aid] = {**body["alert"], "history": [*prev["history"], body.get("history_entry")]}
    return alerts
