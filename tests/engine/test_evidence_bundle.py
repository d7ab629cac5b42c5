"""Evidence bundles and full-history migration, end to end through the engine and the CLI."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from devices.timeutil import format_time
from engine.core.orders_load import load_orders
from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, circle, orders_doc
from engine.evidence import Chain, JsonlStore, attach
from engine.evidence.bundle import BundleInvalid, _derived, export_bundle, verify_bundle
from engine.evidence.chain import GENESIS, canonical_json, verify_records
from engine.evidence.cli import evidence_group
from engine.evidence.history import export_history, import_history, rebuild_alerts
from engine.evidence.orderdoc import order_digest
from engine.evidence.store import read_records

X0, Y0 = ORIGIN
OTHER_Y = Y0 + 20_000  # the second subject lives and moves 20 km north


def two_case_doc() -> dict[str, Any]:
    """O-1 (S-1, ban zone around P-1's home, proximity) and an unrelated O-2 for S-2."""
    doc = orders_doc(
        exclusion=[{"id": "Z-home", "circle": circle(X0, Y0, 400), "protected_person": "P-1"}],
        proximity=[{"protected_person": "P-1", "alert_m": 300, "warn_m": 600}],
    )
    doc["subjects"].append({"id": "S-2", "devices": ["AM-1002"]})
    second = copy.deepcopy(doc["orders"][0])
    second.update(
        id="O-2",
        subject="S-2",
        proximity=[],
        exclusion_zones=[{"id": "Z-far", "circle": circle(X0, OTHER_Y, 300)}],
    )
    doc["orders"].append(second)
    return doc


def run_case(log: Path) -> tuple[Harness, str, str]:
    """S-1 walks through P-1's ban zone (acknowledged by an operator); S-2 walks elsewhere."""
    doc = two_case_doc()
    h = Harness.build(doc)
    with JsonlStore(log) as store:
        play(h, attach(h.engine, Chain(store)))
    alert_id = next(a.alert_id for a in h.engine.alerts.alerts.values() if a.kind == "exclusion")
    return h, alert_id, json.dumps(doc)


def play(h: Harness, listen) -> None:
    am, other, vd = DeviceScript("AM-1001"), DeviceScript("AM-1002"), DeviceScript("VD-2001")
    for i in range(40):
        t = T0 + 15 * i
        listen(h.send(am.fix(t, X0 - 1500 + 75 * i, Y0 + 100, acc=9.0), t + 1), t + 1)
        listen(h.send(other.fix(t + 2, X0 - 3000 + 60 * i, OTHER_Y + 900, acc=7.0), t + 3), t + 3)
        if i % 4 == 0:
            listen(h.send(vd.fix(t + 5, X0 + 2000, Y0 - 2000, acc=11.0), t + 6), t + 6)
        if i == 22:
            aid = next(a.alert_id for a in h.engine.alerts.alerts.values() if a.kind == "exclusion")
            listen(h.engine.act(aid, "ack", "operator-7", "called the subject", t + 4), t + 4)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("case")
    log = root / "audit.jsonl"
    h, alert_id, doc = run_case(log)
    orders = root / "orders.json"
    orders.write_text(doc)
    bundle = root / "bundle"
    summary = export_bundle(log, alert_id, bundle, load_orders(orders))
    return {
        "root": root,
        "log": log,
        "orders": orders,
        "bundle": bundle,
        "alert_id": alert_id,
        "engine": h.engine,
        "summary": summary,
    }


def fresh_copy(case: dict[str, Any], tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(case["bundle"], dst)
    return dst


def test_bundle_holds_history_fixes_zones_map_and_a_verifying_segment(case):
    """The exported bundle has every promised file, and verify accepts it, also against the live log."""
    bundle: Path = case["bundle"]
    names = {p.name for p in bundle.iterdir()}
    assert names == {
        "manifest.json",
        "chain.jsonl",
        "alert.json",
        "history.jsonl",
        "fixes.jsonl",
        "order.json",
        "zones.geojson",
        "map.png",
        "README.txt",
    }
    summary = verify_bundle(bundle, log=case["log"])
    assert summary.records == case["summary"].records > summary.redacted > 0
    alert = json.loads((bundle / "alert.json").read_text())
    engine_alert = case["engine"].alerts.alerts[case["alert_id"]]
    # he left the zone: the engine cleared the condition; the acknowledged alarm waits for a person
    assert alert["state"] == engine_alert.state == "acknowledged"
    assert alert["condition"] == engine_alert.condition == "cleared"
    assert [(e["state"], e["by"]) for e in alert["history"]] == [
        (e.state, e.by) for e in engine_alert.history
    ]
    assert ("acknowledged", "operator-7") in [(e["state"], e["by"]) for e in alert["history"]]


def test_bundle_fixes_carry_accuracy_and_cover_the_episode(case):
    """Fixes of the subject's and victim's devices are present with accuracy and acceptance."""
    fixes = [json.loads(x) for x in (case["bundle"] / "fixes.jsonl").read_text().splitlines()]
    devices = {f["device"] for f in fixes}
    assert devices == {"AM-1001", "VD-2001"}
    assert all(f["acc"] > 0 and f["accepted"] is True for f in fixes)
    alert = json.loads((case["bundle"] / "alert.json").read_text())
    keys = {f["key"] for f in fixes}
    assert set(alert["evidence"]["fixes"]) <= keys


def test_other_cases_are_redacted_not_revealed(case):
    """The unrelated subject's positions are in the segment only as digests."""
    text = (case["bundle"] / "chain.jsonl").read_text()
    assert "AM-1002" not in text and "O-2" not in text
    assert '"redacted":true' in text


def test_zones_are_bound_to_the_chain_by_the_order_digest(case):
    """order.json's digest is the one chained with the alert; zones.geojson is derived from it."""
    manifest = json.loads((case["bundle"] / "manifest.json").read_text())
    book = load_orders(case["orders"])
    assert manifest["order_sha256"] == order_digest(book.orders["O-1"])
    zones = json.loads((case["bundle"] / "zones.geojson").read_text())
    (feat,) = zones["features"]
    assert feat["properties"]["id"] == "Z-home" and feat["properties"]["radius_m"] == 400


def test_map_is_a_png_of_useful_size(case):
    """map.png is a real 1200 x 1200 PNG."""
    data = (case["bundle"] / "map.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1200) and len(data) > 20_000


def _rewrite_manifest(bundle: Path, name: str) -> None:
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _flip_in_chain(bundle: Path, line_no: int, old: str, new: str) -> int:
    lines = (bundle / "chain.jsonl").read_text().splitlines()
    assert old in lines[line_no]
    lines[line_no] = lines[line_no].replace(old, new, 1)
    (bundle / "chain.jsonl").write_text("\n".join(lines) + "\n")
    return json.loads(lines[line_no])["seq"] if new != "" else -1


def _first_full_fix_line(bundle: Path) -> int:
    lines = (bundle / "chain.jsonl").read_text().splitlines()
    return next(i for i, x in enumerate(lines) if '"kind":"fix"' in x and '"body":' in x)


def test_flipped_byte_in_a_chained_fix_names_the_record(case, tmp_path: Path):
    """Changing one digit of a fix's accuracy in chain.jsonl fails verify at that record."""
    bundle = fresh_copy(case, tmp_path)
    i = _first_full_fix_line(bundle)
    seq = _flip_in_chain(bundle, i, '"acc":9.0', '"acc":8.0')
    with pytest.raises(BundleInvalid, match=f"record {seq}: hash mismatch"):
        verify_bundle(bundle)


def test_unparseable_chain_line_names_the_record(case, tmp_path: Path):
    """A byte flipped into JSON syntax still names the record by its position in the segment."""
    bundle = fresh_copy(case, tmp_path)
    lines = (bundle / "chain.jsonl").read_bytes().split(b"\n")
    first = json.loads(lines[0])["seq"]
    lines[3] = lines[3][:10] + bytes([lines[3][10] ^ 0x20 ^ 0x5B]) + lines[3][11:]
    (bundle / "chain.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(BundleInvalid, match=f"record {first + 3}"):
        verify_bundle(bundle)


def test_edited_derived_file_is_caught_even_with_a_rewritten_manifest(case, tmp_path: Path):
    """fixes.jsonl edited and its digest updated in the manifest: it no longer matches the chain."""
    bundle = fresh_copy(case, tmp_path)
    path = bundle / "fixes.jsonl"
    with pytest.raises(BundleInvalid, match=r"fixes\.jsonl: sha256 differs"):
        path.write_text(path.read_text().replace('"acc":9.0', '"acc":3.0', 1))
        verify_bundle(bundle)
    _rewrite_manifest(bundle, "fixes.jsonl")
    with pytest.raises(BundleInvalid, match=r"fixes\.jsonl: does not match what the chain records"):
        verify_bundle(bundle)


def test_moved_zone_is_caught_by_the_chained_order_digest(case, tmp_path: Path):
    """Enlarging the zone in order.json (and zones.geojson, manifest) breaks the order digest."""
    bundle = fresh_copy(case, tmp_path)
    doc = json.loads((bundle / "order.json").read_text())
    doc["exclusion_zones"][0]["circle"]["radius_m"] = 900
    (bundle / "order.json").write_text(json.dumps(doc))
    _rewrite_manifest(bundle, "order.json")
    with pytest.raises(BundleInvalid, match=r"order\.json: its digest differs"):
        verify_bundle(bundle)


def test_dropped_last_record_breaks_the_anchor(case, tmp_path: Path):
    """Removing the newest record of the segment is caught by the manifest anchor."""
    bundle = fresh_copy(case, tmp_path)
    lines = (bundle / "chain.jsonl").read_text().splitlines()
    (bundle / "chain.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BundleInvalid, match="records were removed or added"):
        verify_bundle(bundle)


def test_rewritten_chain_is_caught_against_the_live_log(case, tmp_path: Path):
    """A forger who re-hashes the segment and rewrites every file is exposed by the live log's hashes."""
    from engine.evidence.chain import Record, make_record

    bundle = fresh_copy(case, tmp_path)
    recs = [
        Record.from_json(json.loads(x)) for x in (bundle / "chain.jsonl").read_text().splitlines()
    ]
    i = next(k for k, r in enumerate(recs) if r.kind == "fix" and r.body is not None)
    forged, prev = [], recs[0].prev_hash
    for k, r in enumerate(recs):
        body = dict(r.body) if r.body is not None else None
        if k == i and body is not None:
            body["acc"] = 2.0
        if body is None:
            from engine.evidence.chain import link_hash

            nr = Record(
                r.seq, prev, r.kind, None, link_hash(r.seq, prev, r.kind, r.digest()), r.digest()
            )
        else:
            nr = make_record(r.seq, prev, r.kind, body)  # type: ignore[arg-type]
        forged.append(nr)
        prev = nr.hash
    (bundle / "chain.jsonl").write_text("".join(r.line() + "\n" for r in forged))
    for name, data in _derived(forged, case["alert_id"]).items():
        (bundle / name).write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["anchors"]["last_hash"] = prev
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    for name in ("chain.jsonl", "alert.json", "history.jsonl", "fixes.jsonl"):
        _rewrite_manifest(bundle, name)
    verify_bundle(bundle)  # a complete rewrite is self-consistent: that is what anchors are for
    with pytest.raises(
        BundleInvalid, match=f"record {recs[i].seq}: hash differs from the live log"
    ):
        verify_bundle(bundle, log=case["log"])


def test_export_refuses_an_orders_file_that_is_not_the_one_in_force(case, tmp_path: Path):
    """Exporting with a changed zone would show the court the wrong zone: refused."""
    doc = json.loads(case["orders"].read_text())
    doc["orders"][0]["exclusion_zones"][0]["circle"]["radius_m"] = 401
    from engine.evidence.chain import EvidenceError

    with pytest.raises(EvidenceError, match="differs from the order chained"):
        export_bundle(case["log"], case["alert_id"], tmp_path / "b", load_orders(doc), render=False)


def test_cli_export_then_verify_and_exit_1_on_tampering(case, tmp_path: Path):
    """emguard evidence export/verify: exit 0 when intact, exit 1 naming the record when not."""
    runner = CliRunner()
    out = tmp_path / "cli-bundle"
    res = runner.invoke(
        evidence_group,
        [
            "export",
            case["alert_id"],
            "--log",
            str(case["log"]),
            "--orders",
            str(case["orders"]),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(evidence_group, ["verify", str(out), "--log", str(case["log"])])
    assert res.exit_code == 0 and res.output.startswith("OK:"), res.output
    seq = _flip_in_chain(out, _first_full_fix_line(out), '"acc":9.0', '"acc":9.5')
    res = runner.invoke(evidence_group, ["verify", str(out)])
    assert res.exit_code == 1 and f"record {seq}" in res.output


def test_full_history_round_trip_is_lossless(case, tmp_path: Path):
    """export-all, import into a new log, export-all again: identical bytes, same alerts, chain goes on."""
    first, log2, second = (
        tmp_path / "h1.jsonl",
        tmp_path / "new" / "audit.jsonl",
        tmp_path / "h2.jsonl",
    )
    runner = CliRunner()
    assert (
        runner.invoke(
            evidence_group, ["export-all", "--log", str(case["log"]), "--out", str(first)]
        ).exit_code
        == 0
    )
    log2.parent.mkdir()
    res = runner.invoke(evidence_group, ["import", str(first), "--log", str(log2)])
    assert res.exit_code == 0, res.output
    export_history(log2, second)
    assert first.read_bytes() == second.read_bytes()
    assert log2.read_bytes() == case["log"].read_bytes()
    rebuilt = rebuild_alerts(read_records(log2))
    engine_alerts = case["engine"].alerts.alerts
    assert set(rebuilt) == set(engine_alerts)
    for aid, alert in engine_alerts.items():
        assert rebuilt[aid]["state"] == alert.state and rebuilt[aid]["level"] == alert.level
        assert len(rebuilt[aid]["history"]) == len(alert.history)
    with JsonlStore(log2) as store:
        chain = Chain(store)
        chain.append("action", {"type": "operator", "alert_id": "A-new", "by": "migration"})
    assert verify_records(read_records(log2), prev_hash=GENESIS, first_seq=0).count == chain.length
    assert runner.invoke(evidence_group, ["check", str(log2)]).exit_code == 0


def test_tampered_history_is_not_imported(case, tmp_path: Path):
    """A history with one changed record fails import and leaves no target log behind."""
    src, target = tmp_path / "h.jsonl", tmp_path / "t.jsonl"
    export_history(case["log"], src)
    lines = src.read_text().splitlines()
    rec = json.loads(lines[5])
    rec["body"]["t"] = rec["body"].get("t", 0) + 60
    lines[5] = canonical_json(rec).decode()
    src.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(evidence_group, ["import", str(src), "--log", str(target)])
    assert res.exit_code == 1 and f"record {rec['seq']}" in res.output
    assert not target.exists() and not Path(f"{target}.importing").exists()
    res = CliRunner().invoke(evidence_group, ["check", str(src)])
    assert res.exit_code == 1


def test_import_refuses_a_non_empty_log(case, tmp_path: Path):
    """A history is never spliced onto an existing chain."""
    src = tmp_path / "h.jsonl"
    export_history(case["log"], src)
    target = tmp_path / "t.jsonl"
    shutil.copy(case["log"], target)
    from engine.evidence.chain import EvidenceError

    with pytest.raises(EvidenceError, match="not empty"):
        import_history(src, target)


def test_victim_positions_are_forgotten_after_retention_and_the_chain_still_verifies(
    case, tmp_path: Path
):
    """Redacting her old fixes keeps every hash valid and keeps those around her alerts."""
    log = tmp_path / "audit.jsonl"
    shutil.copy(case["log"], log)
    head_before = verify_records(read_records(log), prev_hash=GENESIS, first_seq=0).last_hash

    def her_fixes() -> int:
        return sum(
            1
            for r in read_records(log)
            if r.kind == "fix" and r.body and r.body["device"] == "VD-2001"
        )

    total = her_fixes()
    res = CliRunner().invoke(
        evidence_group,
        [
            "redact-victims",
            "--log",
            str(log),
            "--orders",
            str(case["orders"]),
            "--before",
            format_time(T0 + 3600),
            "--margin-s",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    left = her_fixes()
    assert 0 < left < total  # the ones inside her alert's episode stay as evidence
    assert (
        verify_records(read_records(log), prev_hash=GENESIS, first_seq=0).last_hash == head_before
    )
    his = sum(
        1 for r in read_records(log) if r.kind == "fix" and r.body and r.body["device"] == "AM-1001"
    )
    assert his == 40  # only the protected person's positions are forgotten
    verify_bundle(
        export_bundle(
            log, case["alert_id"], tmp_path / "b", load_orders(case["orders"]), render=False
        )
        and tmp_path / "b",
        log=log,
    )
