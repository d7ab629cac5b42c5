"""An append-only, hash-chained audit log: every fix used as evidence, every alert change and action.

Why a chain: Spain lost its alert history when it changed contractor and
offenders contest erroneous data in court.  Each record commits to the one
before it, so changing, inserting or deleting any record breaks every hash
after it; comparing one hash (the *anchor*, e.g. the head printed by
``emguard evidence head`` into a case file) with an independent copy proves the
whole prefix up to it.

Record (one JSON object)::

    {"seq": 17, "prev_hash": "<64 hex>", "kind": "fix"|"alert_change"|"action",
     "body": {...}, "hash": "<64 hex>"}

    body_sha256 = sha256(canonical(body))
    hash        = sha256(canonical({"seq", "prev_hash", "kind", "body_sha256"}))

The hash covers everything but itself, with the body entering through its
digest.  That one indirection lets an evidence bundle *redact* records of
other cases (keep ``body_sha256``, drop ``body``) while a verifier still
recomputes every link: a court bundle never has to carry another victim's
positions to prove continuity.  ``canonical`` is JSON with sorted keys, no
spaces, UTF-8, no NaN/Infinity (``canonical_json``); the first record's
``prev_hash`` is 64 zeros (``GENESIS``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from engine.errors import EngineError

RecordKind = Literal["fix", "alert_change", "action"]
KINDS: frozenset[str] = frozenset({"fix", "alert_change", "action"})
GENESIS = "0" * 64
SCHEME = "emguard-chain-v1: hash = sha256(canonical{seq, prev_hash, kind, body_sha256})"


class EvidenceError(EngineError):
    """Base error of the evidence package (bad log, broken chain, bad bundle)."""


class ChainBroken(EvidenceError):
    """A record whose hash or link does not verify; ``seq`` names the first broken record."""

    def __init__(self, seq: int | None, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        where = f"record {seq}" if seq is not None else "chain"
        super().__init__(f"{where}: {reason}")


def canonical_json(obj: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, compact, UTF-8, finite numbers only."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def body_digest(body: Mapping[str, Any]) -> str:
    """``body_sha256`` of a record body."""
    return sha256_hex(canonical_json(body))


def link_hash(seq: int, prev_hash: str, kind: str, body_sha256: str) -> str:
    """The record hash from its link fields and its body digest."""
    return sha256_hex(
        canonical_json(
            {"seq": seq, "prev_hash": prev_hash, "kind": kind, "body_sha256": body_sha256}
        )
    )


@dataclass(frozen=True, slots=True)
class Record:
    """One chained record.  ``body`` is None when redacted (then ``body_sha256`` stands in)."""

    seq: int
    prev_hash: str
    kind: str
    body: Mapping[str, Any] | None
    hash: str
    body_sha256: str | None = None
    # canonical body bytes, kept only by ``make_record`` (never trusted from input) to save work
    canon: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def redacted(self) -> bool:
        """A redacted record proves its link but does not reveal its body."""
        return self.body is None

    def digest(self) -> str:
        """The body digest: recomputed from the body, or the stored one when redacted."""
        if self.body is not None:
            return sha256_hex(self.canon) if self.canon is not None else body_digest(self.body)
        if self.body_sha256 is None:
            raise ChainBroken(self.seq, "redacted record without body_sha256")
        return self.body_sha256

    def expected_hash(self) -> str:
        """What ``hash`` must be given the other fields."""
        return link_hash(self.seq, self.prev_hash, self.kind, self.digest())

    def to_json(self) -> dict[str, Any]:
        """The stored / exported object (a redacted record carries ``body_sha256``)."""
        if self.body is None:
            return {
                "seq": self.seq,
                "prev_hash": self.prev_hash,
                "kind": self.kind,
                "body_sha256": self.body_sha256,
                "redacted": True,
                "hash": self.hash,
            }
        return {
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "kind": self.kind,
            "body": self.body,
            "hash": self.hash,
        }

    def line(self) -> str:
        """One JSON Lines line (canonical, so the stored bytes are reproducible), no newline."""
        if self.canon is not None and self.body is not None:  # the same bytes, assembled
            return (
                f'{{"body":{self.canon.decode("utf-8")},"hash":"{self.hash}",'
                f'"kind":"{self.kind}","prev_hash":"{self.prev_hash}","seq":{self.seq}}}'
            )
        return canonical_json(self.to_json()).decode("utf-8")

    def redact(self) -> Record:
        """The same record with its body replaced by its digest."""
        if self.body is None:
            return self
        return Record(self.seq, self.prev_hash, self.kind, None, self.hash, body_digest(self.body))

    @classmethod
    def from_json(cls, obj: Any) -> Record:
        """Parse a stored or exported record; structure errors raise ``ChainBroken``."""
        if not isinstance(obj, Mapping):
            raise ChainBroken(None, "record is not a JSON object")
        seq = obj.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ChainBroken(None, f"bad seq {seq!r}")
        for name in ("prev_hash", "hash"):
            value = obj.get(name)
            if not isinstance(value, str) or len(value) != 64:
                raise ChainBroken(seq, f"{name} is not a 64-character hex digest")
        kind = obj.get("kind")
        if kind not in KINDS:
            raise ChainBroken(seq, f"unknown kind {kind!r}")
        if obj.get("redacted"):
            digest = obj.get("body_sha256")
            if not isinstance(digest, str) or len(digest) != 64:
                raise ChainBroken(seq, "redacted record needs a body_sha256 digest")
            return cls(seq, obj["prev_hash"], kind, None, obj["hash"], digest)
        body = obj.get("body")
        if not isinstance(body, Mapping):
            raise ChainBroken(seq, "body is not a JSON object")
        return cls(seq, obj["prev_hash"], kind, body, obj["hash"])


def make_record(seq: int, prev_hash: str, kind: RecordKind, body: Mapping[str, Any]) -> Record:
    """Build and hash a new record (the body must be canonical-JSON-able)."""
    if kind not in KINDS:
        raise EvidenceError(f"unknown record kind {kind!r}")
    canon = canonical_json(body)
    frozen = json.loads(canon)  # a private copy exactly as it will be read back
    digest = sha256_hex(canon)
    return Record(
        seq, prev_hash, kind, frozen, link_hash(seq, prev_hash, kind, digest), canon=canon
    )


@dataclass(frozen=True, slots=True)
class Verified:
    """What a successful verification covered."""

    count: int
    first_seq: int | None
    last_seq: int | None
    first_prev_hash: str | None
    last_hash: str | None
    redacted: int


def verify_records(
    records: Iterable[Record], *, prev_hash: str | None = None, first_seq: int | None = None
) -> Verified:
    """Recompute every hash and check continuity; raise ``ChainBroken`` at the first bad record.

    ``prev_hash`` / ``first_seq`` are the anchors a segment must start from
    (``GENESIS`` and 0 for a whole chain); None accepts whatever the first
    record says (and reports it in the result, to be compared with an anchor).
    """
    count = redacted = 0
    first: Record | None = None
    last: Record | None = None
    for rec in records:
        if first is None:
            first = rec
            if first_seq is not None and rec.seq != first_seq:
                raise ChainBroken(rec.seq, f"segment starts at seq {rec.seq}, expected {first_seq}")
            if prev_hash is not None and rec.prev_hash != prev_hash:
                raise ChainBroken(rec.seq, "prev_hash does not match the anchor before the segment")
        else:
            assert last is not None
            if rec.seq != last.seq + 1:
                raise ChainBroken(rec.seq, f"sequence gap: follows seq {last.seq}")
            if rec.prev_hash != last.hash:
                raise ChainBroken(
                    rec.seq, f"prev_hash does not match the hash of record {last.seq}"
                )
        if rec.expected_hash() != rec.hash:
            what = "link fields or body_sha256" if rec.redacted else "contents (kind or body)"
            raise ChainBroken(rec.seq, f"hash mismatch: the record's {what} changed")
        count += 1
        redacted += rec.redacted
        last = rec
    return Verified(
        count,
        first.seq if first else None,
        last.seq if last else None,
        first.prev_hash if first else None,
        last.hash if last else None,
        redacted,
    )


class RecordStore(Protocol):
    """Where a chain keeps its records (``engine.evidence.store``: JSON Lines file, memory)."""

    def head(self) -> Record | None:
        """The newest record, or None for an empty chain."""

    def write(self, record: Record) -> None:
        """Append one record (already hashed and linked)."""

    def flush(self) -> None:
        """Make everything written so far durable to the store's standard."""

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        """Records with ``start <= seq < stop`` in order."""

    def close(self) -> None:
        """Flush and release the store's resources."""


class Chain:
    """Appends records to a store, linking each to the one before.

    Not thread-safe and single-writer by design: one chain per engine process
    (with several workers, give each its own log file; each is verified alone).
    """

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        head = store.head()
        if head is not None and head.expected_hash() != head.hash:
            raise ChainBroken(
                head.seq, "the log's last record does not verify; not appending to it"
            )
        self._next_seq = head.seq + 1 if head else 0
        self._prev = head.hash if head else GENESIS

    @property
    def length(self) -> int:
        """Number of records in the chain."""
        return self._next_seq

    @property
    def head_hash(self) -> str:
        """Hash of the newest record (``GENESIS`` when empty): the anchor to write down."""
        return self._prev

    def append(self, kind: RecordKind, body: Mapping[str, Any]) -> Record:
        """Hash, link and store one record."""
        rec = make_record(self._next_seq, self._prev, kind, body)
        self.store.write(rec)
        self._next_seq += 1
        self._prev = rec.hash
        return rec

    def flush(self) -> None:
        """Flush the store (the service calls this once per processed batch)."""
        self.store.flush()

    def close(self) -> None:
        """Flush and close the store (at shutdown)."""
        self.store.close()
