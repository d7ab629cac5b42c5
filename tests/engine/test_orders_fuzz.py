"""Orders loader fuzz: any JSON in, either an OrderBook or one clear error naming the problem."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.core.testing import ORIGIN, circle, orders_doc, square
from engine.errors import OrdersError
from geo.errors import GeoError

X0, Y0 = ORIGIN
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
VALID = orders_doc(
    exclusion=[{"id": "Z1", "polygon": square(X0, Y0, 200)}, {"id": "Z2", "circle": circle(X0, Y0, 900)}],
    inclusion=[{"id": "Z3", "circle": circle(X0, Y0, 150),
                "schedule": [{"days": "mon-fri", "from": "22:00", "to": "06:00"}]}],
    proximity=[{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}],
)


def _load(doc: object) -> None:
    try:
        book = load_orders(doc)  # type: ignore[arg-type]
    except (OrdersError, GeoError) as exc:
        assert str(exc).strip(), "an error must say what is wrong"
    else:
        assert isinstance(book, OrderBook)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_crashes_the_loader(doc):
    """Any JSON value is loaded or refused with an OrdersError/ZoneError, nothing else."""
    _load(doc if isinstance(doc, dict) else {"v": 1, "orders": doc})


PATHS = [("subjects", 0), ("protected_persons", 0), ("orders", 0)]
FIELDS = ["id", "devices", "residence", "subject", "valid_from", "valid_until", "exclusion_zones",
          "inclusion_zones", "proximity", "legal_basis", "corridors", "time_windows",
          "victim_warn_level"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), st.sampled_from(FIELDS), json_values)
def test_one_field_of_a_valid_file_replaced_by_anything(path, field, value):
    """Replacing any one field of a valid orders file with any JSON value never crashes."""
    doc = copy.deepcopy(VALID)
    doc[path[0]][path[1]][field] = value
    _load(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["Z1", "Z2", "Z3"]), st.sampled_from(["polygon", "circle", "schedule", "geometry"]),
       json_values)
def test_zone_fields_replaced_by_anything(zone_id, field, value):
    """Broken zone geometry or schedules are refused with a message naming the zone."""
    doc = copy.deepcopy(VALID)
    order = doc["orders"][0]
    for z in order["exclusion_zones"] + order["inclusion_zones"]:
        if z["id"] == zone_id:
            z[field] = value
    _load(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["corridors", "time_windows"]),
       st.sampled_from(["id", "line", "width_m", "polygon", "max_dwell_s", "schedule", "from", "to",
                        "reason", "area"]),
       json_values)
def test_corridor_and_window_fields_replaced_by_anything(key, field, value):
    """Approved corridors and time windows with any broken field are refused, never a crash."""
    doc = copy.deepcopy(VALID)
    line = [[4.45, 51.91], [4.49, 51.93]]
    entry = ({"id": "C-1", "line": line, "width_m": 100} if key == "corridors"
             else {"id": "W-1", "from": "2026-11-20T09:00:00Z", "to": "2026-11-20T12:00:00Z"})
    entry[field] = value
    doc["orders"][0][key] = [entry]
    _load(doc)
