"""``emguard orders check``: each enforceability rule on a small catalogue of orders, and exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.core.enforceability import Finding, check_orders
from engine.core.testing import ORIGIN, T0, circle, lonlat, orders_doc, square
from engine.tools.orders_check import main_check, orders_group

X0, Y0 = ORIGIN
NOW = T0


def doc_with(
    residence: tuple[float, float] | None = (X0 - 10_000, Y0), **kw: Any
) -> dict[str, Any]:
    doc = orders_doc(**kw)
    if residence is None:
        doc["subjects"][0].pop("residence")
    else:
        lon, lat = lonlat(*residence)
        doc["subjects"][0]["residence"] = {"lat": lat, "lon": lon}
    return doc


def codes(findings: list[Finding]) -> set[tuple[str, str, str | None]]:
    return {(f.severity, f.code, f.zone) for f in findings}


def test_clean_order_has_no_findings() -> None:
    """A far-away residence, a big victim zone, a sane curfew and a 60-day order pass."""
    doc = doc_with(
        exclusion=[{"id": "Z-home-P1", "circle": circle(X0 + 5000, Y0, 5000)}],
        inclusion=[{"id": "Z-curfew", "circle": circle(X0 - 10_000, Y0, 150)}],
        proximity=[{"protected_person": "P-1", "alert_m": 1000}],
    )
    assert check_orders(doc, NOW) == []


@pytest.mark.parametrize(
    ("zone_x", "expected"),
    [(X0 + 1000, "is 800 m from"), (X0 + 100, "is inside"), (X0 + 1199, "is 999 m from")],
)
def test_residence_near_exclusion_is_blocking_with_distance(zone_x: float, expected: str) -> None:
    """A residence closer than 1,000 m to an exclusion zone is blocking and names zone and distance."""
    doc = doc_with(
        residence=(X0, Y0), exclusion=[{"id": "Z-ban", "polygon": square(zone_x, Y0, 200.0)}]
    )
    found = [f for f in check_orders(doc, NOW) if f.code == "residence_near_exclusion"]
    assert len(found) == 1 and found[0].severity == "blocking" and found[0].zone == "Z-ban"
    assert f"{expected} exclusion zone Z-ban" in found[0].message


def test_residence_exactly_beyond_limit_passes() -> None:
    """1,001 m from the zone edge is enforceable."""
    doc = doc_with(
        residence=(X0 - 1001 - 200, Y0), exclusion=[{"id": "Z", "polygon": square(X0, Y0, 200.0)}]
    )
    assert not [f for f in check_orders(doc, NOW) if f.code == "residence_near_exclusion"]


@pytest.mark.parametrize(
    ("zone", "advice"),
    [
        ({"id": "Z-home-P1", "circle": circle(X0, Y0, 1200)}, True),
        ({"id": "Z-a", "protected_person": "P-1", "circle": circle(X0, Y0, 4999)}, True),
        ({"id": "Z-a", "protected_person": "P-1", "polygon": square(X0, Y0, 1000)}, True),
        ({"id": "Z-school", "circle": circle(X0, Y0, 1200)}, False),  # not about a victim
        ({"id": "Z-P-1", "circle": circle(X0, Y0, 5000)}, False),
        ({"id": "Z-P10", "circle": circle(X0, Y0, 1000)}, False),  # P10 is not P-1
    ],
)
def test_small_victim_zone_gets_reaction_time_advice(zone: dict[str, Any], advice: bool) -> None:
    """Victim zones under 5 km get advice with minutes walking, cycling and driving."""
    found = [
        f for f in check_orders(doc_with(exclusion=[zone]), NOW) if f.code == "victim_zone_small"
    ]
    assert bool(found) is advice
    if advice:
        assert found[0].severity == "advice" and "min walking" in found[0].message
        assert "min driving" in found[0].message


def test_reaction_minutes_are_computed_from_radius() -> None:
    """A 1,200 m zone: 14.3 min walking, 4.4 cycling, 1.4 driving."""
    doc = doc_with(exclusion=[{"id": "Z-home-P1", "circle": circle(X0, Y0, 1200)}])
    msg = next(f.message for f in check_orders(doc, NOW) if f.code == "victim_zone_small")
    assert "14.3 min walking, 4.4 min cycling, 1.4 min driving" in msg


def test_polygon_inradius_used_for_size() -> None:
    """A 60 m square inclusion zone (inradius 30 m) is blocking; a 120 m one is not."""
    small = doc_with(inclusion=[{"id": "Z-c", "polygon": square(X0 - 10_000, Y0, 30.0)}])
    big = doc_with(inclusion=[{"id": "Z-c", "polygon": square(X0 - 10_000, Y0, 60.0)}])
    found = [f for f in check_orders(small, NOW) if f.code == "inclusion_zone_too_small"]
    assert (
        len(found) == 1 and "inradius 30 m" in found[0].message and found[0].severity == "blocking"
    )
    assert not [f for f in check_orders(big, NOW) if f.code == "inclusion_zone_too_small"]


def test_tiny_inclusion_circle_is_blocking() -> None:
    """A 40 m curfew circle is below GPS accuracy: blocking."""
    doc = doc_with(inclusion=[{"id": "Z-c", "circle": circle(X0 - 10_000, Y0, 40)}])
    assert ("blocking", "inclusion_zone_too_small", "Z-c") in codes(check_orders(doc, NOW))


def test_missing_victim_device_is_blocking() -> None:
    """A proximity rule for a protected person without a device is blocking."""
    doc = doc_with(proximity=[{"protected_person": "P-1", "alert_m": 500}])
    doc["protected_persons"][0]["devices"] = []
    found = [f for f in check_orders(doc, NOW) if f.code == "missing_device"]
    assert len(found) == 1 and "P-1" in found[0].message and found[0].severity == "blocking"


@pytest.mark.parametrize(
    ("basis", "days", "code"),
    [
        ("gedragsaanwijzing", 90, None),
        ("gedragsaanwijzing", 91, "validity_exceeds_legal_basis"),
        ("vrijheidsbeperkende_maatregel", 365 * 5, None),
        ("made_up", 30, "unknown_legal_basis"),
    ],
)
def test_validity_against_legal_basis(basis: str, days: int, code: str | None) -> None:
    """Gedragsaanwijzing may run at most 90 days; an unknown basis is blocking (unchecked)."""
    doc = doc_with(legal_basis=basis, valid_from=NOW - DAY, valid_until=NOW - DAY + days * DAY)
    found = {f.code for f in check_orders(doc, NOW)} - {"expires_soon"}
    assert found == ({code} if code else set())


DAY = 86400.0


@pytest.mark.parametrize(
    ("until", "finding"),
    [
        (NOW - 1, ("blocking", "lapsed", None)),
        (NOW + 13 * DAY, ("advice", "expires_soon", None)),
        (NOW + 15 * DAY, None),
    ],
)
def test_lapsed_and_expiring(until: float, finding: tuple[str, str, None] | None) -> None:
    """An ended order is blocking; one ending within 14 days gets advice."""
    doc = doc_with(valid_from=NOW - 30 * DAY, valid_until=until)
    assert codes(check_orders(doc, NOW)) == ({finding} if finding else set())


def test_invalid_geometry_is_reported_as_blocking() -> None:
    """A self-intersecting polygon fails to load; the loader's message is one blocking finding."""
    bow = [[4.46, 51.91], [4.47, 51.92], [4.47, 51.91], [4.46, 51.92], [4.46, 51.91]]
    doc = doc_with(exclusion=[{"id": "Z-bow", "polygon": bow}])
    (f,) = check_orders(doc, NOW)
    assert f.severity == "blocking" and f.code == "invalid" and "Z-bow" in f.message


def test_exit_codes_and_table(tmp_path: Path) -> None:
    """0 clean or advice only, 1 with a blocking finding, 2 for an unreadable file; a table is printed."""
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(doc_with(valid_from=NOW - DAY, valid_until=NOW + 5 * DAY)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc_with(valid_from=NOW - 30 * DAY, valid_until=NOW - DAY)))
    junk = tmp_path / "junk.json"
    junk.write_text("{nope")
    out = io.StringIO()
    assert main_check(ok, now=NOW, out=out) == 0
    assert "expires_soon" in out.getvalue() and "0 blocking, 1 advice" in out.getvalue()
    out = io.StringIO()
    assert main_check(bad, now=NOW, out=out) == 1
    assert out.getvalue().splitlines()[0].split()[:4] == ["SEVERITY", "ORDER", "ZONE", "CODE"]
    assert main_check(junk, now=NOW, out=io.StringIO()) == 2
    assert main_check(tmp_path / "missing.json", now=NOW, out=io.StringIO()) == 2


def test_click_command_exit_code(tmp_path: Path) -> None:
    """``orders check FILE`` exits with the check's code."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc_with(valid_from=T0 - 60 * DAY, valid_until=T0 - DAY)))
    result = CliRunner().invoke(orders_group, ["check", str(bad)])
    assert result.exit_code == 1 and "lapsed" in result.output
