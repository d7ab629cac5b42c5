"""``emguard evidence ...``: export and verify alert bundles, move the full history, print the head.

The lead wires this group into the console script with ``main.add_command(evidence_group)``.
Exit codes: 0 fine, 1 verification failed (tampering or loss; the message
names the first broken record or file), 2 usage or input problems (click's).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.errors import EngineError
from engine.evidence.bundle import BundleInvalid, export_bundle, verify_bundle
from engine.evidence.chain import GENESIS, ChainBroken, EvidenceError, verify_records
from engine.evidence.history import export_history, import_history, verify_history
from engine.evidence.store import read_records

_FILE = click.Path(dir_okay=False, path_type=Path)
_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


def _fail(message: str) -> None:
    click.echo(f"FAILED: {message}", err=True)
    sys.exit(1)


@click.group("evidence")
def evidence_group() -> None:
    """Hash-chained audit log: alert bundles for court, verification, full-history migration."""


@evidence_group.command("export")
@click.argument("alert_id")
@click.option("--log", "log", required=True, type=_EXISTING, help="The evidence log (audit.jsonl).")
@click.option(
    "--orders", type=_EXISTING, default=None, help="orders.json in force (zones, devices)."
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--margin-s", default=600.0, show_default=True, help="Fixes this long before/after.")
@click.option("--crs", default="EPSG:28992", show_default=True, help="Projected CRS of the map.")
def export_cmd(
    alert_id: str, log: Path, orders: Path | None, out: Path, margin_s: float, crs: str
) -> None:
    """Write a self-contained, verifiable bundle for ALERT_ID."""
    from engine.core.orders_load import load_orders

    try:
        book = load_orders(orders) if orders else None
        summary = export_bundle(log, alert_id, out, book, margin_s=margin_s, crs=crs)
    except ChainBroken as exc:
        _fail(f"the log does not verify, nothing exported: {exc}")
        return
    except (EngineError, ValueError) as exc:  # ZoneError from orders is a ValueError too
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"bundle {out}: records {summary.first_seq}..{summary.last_seq} "
        f"({summary.redacted} redacted), {summary.history} history lines, {summary.fixes} fixes"
    )


@evidence_group.command("verify")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--log", "log", type=_EXISTING, default=None, help="Also compare with the live log.")
def verify_cmd(bundle: Path, log: Path | None) -> None:
    """Prove BUNDLE untampered: every hash, continuity, anchors, derived files; exit 1 if not."""
    try:
        summary = verify_bundle(bundle, log=log)
    except (BundleInvalid, ChainBroken) as exc:
        _fail(str(exc))
        return
    except EvidenceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"OK: alert {summary.alert_id}, records {summary.first_seq}..{summary.last_seq} verified "
        f"({summary.redacted} redacted), {len(summary.files)} files match"
    )


@evidence_group.command("export-all")
@click.option("--log", "log", required=True, type=_EXISTING)
@click.option("--out", required=True, type=_FILE)
def export_all_cmd(log: Path, out: Path) -> None:
    """Export the whole verified history (header + every record) for another platform."""
    try:
        s = export_history(log, out)
    except ChainBroken as exc:
        _fail(f"the log does not verify, nothing exported: {exc}")
        return
    click.echo(f"{s.records} records exported to {out}, head {s.head_seq} {s.head_hash}")


@evidence_group.command("import")
@click.argument("history", type=_EXISTING)
@click.option("--log", "log", required=True, type=_FILE, help="New (empty) evidence log to create.")
def import_cmd(history: Path, log: Path) -> None:
    """Import a history export into a new evidence log, verifying every record."""
    try:
        s = import_history(history, log)
    except ChainBroken as exc:
        _fail(f"the history does not verify, nothing imported: {exc}")
        return
    except EvidenceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{s.records} records imported into {log}, head {s.head_seq} {s.head_hash}")


@evidence_group.command("check")
@click.argument("path", type=_EXISTING)
def check_cmd(path: Path) -> None:
    """Verify a whole evidence log or history export from genesis; exit 1 at the first broken record."""
    try:
        with open(path, encoding="utf-8") as fh:
            is_history = fh.readline().startswith('{"emguard_history"')
        if is_history:
            s = verify_history(path)
            count, seq, head = s.records, s.head_seq, s.head_hash
        else:
            v = verify_records(read_records(path), prev_hash=GENESIS, first_seq=0)
            count, seq, head = v.count, v.last_seq, v.last_hash or GENESIS
    except (ChainBroken, EvidenceError) as exc:
        _fail(str(exc))
        return
    click.echo(f"OK: {count} records, head {seq} {head}")


@evidence_group.command("head")
@click.option("--log", "log", required=True, type=_EXISTING)
def head_cmd(log: Path) -> None:
    """Print the newest record's seq and hash: write it in the case file as an anchor."""
    head = None
    for rec in read_records(log):  # read-only: never repairs or touches the log
        head = rec
    if head is None:
        click.echo(f"empty {GENESIS}")
    else:
        click.echo(f"{head.seq} {head.hash}")


@evidence_group.command("redact-victims")
@click.option(
    "--log", "log", required=True, type=_EXISTING, help="A log no engine is appending to."
)
@click.option(
    "--orders", required=True, type=_EXISTING, help="orders.json naming the victims' devices."
)
@click.option("--before", required=True, help="Forget victims' fixes older than this (RFC 3339).")
@click.option(
    "--margin-s", default=600.0, show_default=True, help="Kept around every alert naming her."
)
def redact_cmd(log: Path, orders: Path, before: str, margin_s: float) -> None:
    """Forget protected persons' positions older than --before; every hash still verifies."""
    from devices.timeutil import parse_time
    from engine.core.orders_load import load_orders
    from engine.evidence.retention import redact_victim_fixes

    try:
        s = redact_victim_fixes(log, load_orders(orders), parse_time(before), margin_s=margin_s)
    except ChainBroken as exc:
        _fail(f"the log does not verify, nothing redacted: {exc}")
        return
    except (EngineError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{s.redacted} victim fixes redacted, {s.kept_for_alerts} kept as alert evidence; head {s.head_hash}"
    )
