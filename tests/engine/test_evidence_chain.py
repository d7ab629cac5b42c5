"""The hash-chained audit log: appending, reopening, redaction, and every kind of tampering."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.evidence.chain import (
    GENESIS,
    Chain,
    ChainBroken,
    Record,
    body_digest,
    canonical_json,
    link_hash,
    verify_records,
)
from engine.evidence.store import JsonlStore, MemoryStore, read_records

BODIES = [
    (
        "fix",
        {"device": "AM-1001", "seq": 1, "t": 1795000000.25, "lat": 51.9, "lon": 4.47, "acc": 8.0},
    ),
    ("alert_change", {"alert_id": "A-1", "change": "raised", "note": "café ü"}),
    ("action", {"type": "operator", "alert_id": "A-1", "by": "op-7", "note": ""}),
    (
        "fix",
        {"device": "VD-2001", "seq": 9, "t": 1795000001.0, "lat": 51.91, "lon": 4.46, "acc": 12.5},
    ),
]


def filled(store: MemoryStore | JsonlStore, n: int = 12) -> Chain:
    chain = Chain(store)
    for i in range(n):
        kind, body = BODIES[i % len(BODIES)]
        chain.append(kind, {**body, "i": i})  # type: ignore[arg-type]
    chain.flush()
    return chain


def test_records_link_to_genesis_and_each_other_and_verify():
    """Record 0 links to 64 zeros, each later record to its predecessor's hash; the whole chain verifies."""
    chain = filled(MemoryStore())
    recs = list(chain.store.records())
    assert recs[0].prev_hash == GENESIS and [r.seq for r in recs] == list(range(12))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))
    result = verify_records(recs, prev_hash=GENESIS, first_seq=0)
    assert (result.count, result.last_hash) == (12, chain.head_hash)


def test_hash_is_sha256_of_link_fields_and_body_digest():
    """The documented formula reproduces a stored hash from its parts."""
    rec = filled(MemoryStore(), 1).store.head()
    assert rec is not None and rec.body is not None
    import hashlib

    digest = hashlib.sha256(canonical_json(rec.body)).hexdigest()
    link = {"seq": 0, "prev_hash": GENESIS, "kind": "fix", "body_sha256": digest}
    assert (
        rec.hash
        == hashlib.sha256(canonical_json(link)).hexdigest()
        == link_hash(0, GENESIS, "fix", digest)
    )


def test_reopened_log_continues_the_chain(tmp_path: Path):
    """Closing and reopening a JSON Lines log appends after the last record with the right link."""
    path = tmp_path / "audit.jsonl"
    first = JsonlStore(path)
    chain = filled(first, 5)
    first.close()
    with JsonlStore(path) as store:
        again = Chain(store)
        assert again.length == 5 and again.head_hash == chain.head_hash
        again.append("action", {"type": "operator", "alert_id": "A-2"})
    assert verify_records(read_records(path), prev_hash=GENESIS, first_seq=0).count == 6


def test_torn_last_line_is_set_aside_not_lost(tmp_path: Path):
    """A crash mid-write leaves a partial line: opening moves it to a .torn file and continues."""
    path = tmp_path / "audit.jsonl"
    store = JsonlStore(path)
    filled(store, 3)
    store.close()
    with open(path, "ab") as fh:
        fh.write(b'{"seq":3,"prev_hash":"ab')
    size_before = path.stat().st_size
    with JsonlStore(path) as store:
        assert Chain(store).length == 3
    (torn,) = tmp_path.glob("audit.jsonl.torn-*")
    assert torn.read_bytes() == b'{"seq":3,"prev_hash":"ab'
    assert path.stat().st_size == size_before - len(torn.read_bytes())


def test_redacted_records_still_prove_continuity():
    """A record with its body replaced by body_sha256 verifies; a changed digest does not."""
    recs = list(filled(MemoryStore(), 6).store.records())
    segment = [r.redact() if r.seq % 2 else r for r in recs]
    assert verify_records(segment).redacted == 3
    obj = segment[1].to_json()
    assert "body" not in obj and obj["body_sha256"] == body_digest(recs[1].body or {})
    forged = Record.from_json({**obj, "body_sha256": "0" * 64})
    with pytest.raises(ChainBroken) as err:
        verify_records([segment[0], forged, *segment[2:]])
    assert err.value.seq == 1


def _lines(chain: Chain) -> list[str]:
    return [r.line() for r in chain.store.records()]


def _rehash(line: str) -> str:
    obj = json.loads(line)
    obj["hash"] = ("1" if obj["hash"][0] == "0" else "0") + obj["hash"][1:]
    return canonical_json(obj).decode()


@pytest.mark.parametrize(
    ("name", "tamper", "seq"),
    [
        (
            "body value changed",
            lambda ls: ls.__setitem__(4, ls[4].replace('"acc":8.0', '"acc":80.0')),
            4,
        ),
        ("record deleted", lambda ls: ls.pop(5), 6),
        ("records swapped", lambda ls: ls.__setitem__(slice(3, 5), [ls[4], ls[3]]), 4),
        (
            "kind changed",
            lambda ls: ls.__setitem__(2, ls[2].replace('"kind":"action"', '"kind":"fix"')),
            2,
        ),
        ("hash rewritten", lambda ls: ls.__setitem__(7, _rehash(ls[7])), 7),
    ],
)
def test_tampering_names_the_first_broken_record(name: str, tamper, seq: int):
    """Changing, deleting, reordering or re-hashing one record fails verification at that record."""
    lines = _lines(filled(MemoryStore()))
    tamper(lines)
    records = [Record.from_json(json.loads(x)) for x in lines]
    with pytest.raises(ChainBroken) as err:
        verify_records(records, prev_hash=GENESIS, first_seq=0)
    assert err.value.seq == seq, name


def test_truncated_tail_is_caught_by_the_head_anchor():
    """Dropping the newest records leaves a valid prefix: only the written-down head exposes it."""
    chain = filled(MemoryStore())
    prefix = list(chain.store.records())[:-2]
    assert verify_records(prefix).last_hash != chain.head_hash


CHAIN = filled(MemoryStore(), 8)
BLOB = ("\n".join(_lines(CHAIN)) + "\n").encode()


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, len(BLOB) - 2), bit=st.integers(0, 7))
@example(pos=BLOB.index(b'"acc":8.0') + 6, bit=0)
@example(pos=BLOB.index(b'"hash":"') + 9, bit=1)
def test_any_bit_flip_in_a_log_is_detected_or_changes_nothing(tmp_path_factory, pos: int, bit: int):
    """Flipping any single bit of a stored log makes verification fail, unless the JSON means the same."""
    data = bytearray(BLOB)
    data[pos] ^= 1 << bit
    path = tmp_path_factory.mktemp("flip") / "audit.jsonl"
    path.write_bytes(bytes(data))
    try:
        records = list(read_records(path))
        verify_records(records, prev_hash=GENESIS, first_seq=0)
    except (ChainBroken, UnicodeDecodeError):
        return
    original = [r.to_json() for r in CHAIN.store.records()]
    assert [r.to_json() for r in records] == original, "a changed log verified"


@pytest.mark.parametrize(("kind", "body"), BODIES)
def test_assembled_line_is_the_canonical_form(kind: str, body: dict):
    """The fast line of a fresh record equals the canonical JSON of its parts, byte for byte."""
    rec = Chain(MemoryStore()).append(kind, body)  # type: ignore[arg-type]
    assert rec.line() == canonical_json(rec.to_json()).decode()
    again = Record.from_json(json.loads(rec.line()))
    assert again.canon is None and again.expected_hash() == rec.hash == rec.expected_hash()
