"""The alert book's hand-built copies and merges give what the plain dataclass code gives."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import example, given
from hypothesis import strategies as st

from engine.alerts import Alert, HistoryEntry, _merge_evidence, _replace_alert, _round

_KEYS = st.sampled_from([f"AM-1:{i}" for i in range(30)])
_EVIDENCE = st.lists(_KEYS, max_size=25).map(tuple)
_MAYBE_FLOAT = st.none() | st.floats()


def _alert(evidence: tuple[str, ...]) -> Alert:
    return Alert(
        "A-1", "proximity", "alarm", "acknowledged", "o1", "s1", "p1", None, 1.0, 2.0, 3.0, 4.0,
        distance_m=7.5, certainty="likely", closing_speed_mps=0.5, time_to_contact_s=60.0,
        evidence=evidence, late=True, detail="near", updated_at=5.0, target="p1", device="AM-1",
        history=(HistoryEntry(2.0, "open", "alarm", "engine"),),
    )  # fmt: skip


_CHANGES = st.fixed_dictionaries({}, optional={
    "distance_m": _MAYBE_FLOAT, "certainty": st.none() | st.sampled_from(["", "likely"]),
    "closing_speed_mps": _MAYBE_FLOAT, "time_to_contact_s": _MAYBE_FLOAT, "evidence": _EVIDENCE,
    "level": st.sampled_from(["warning", "critical"]), "state": st.sampled_from(["open", "resolved"]),
    "deadline": st.floats(), "updated_at": st.floats(), "detail": st.text(max_size=5),
    "history": st.just((HistoryEntry(6.0, "resolved", "alarm", "op-1", "done"),)),
})  # fmt: skip


@given(old=_EVIDENCE, changes=_CHANGES)
def test_a_replaced_alert_equals_dataclasses_replace(old: tuple[str, ...], changes: dict[str, object]) -> None:
    """_replace_alert (quiet updates, rises and transitions) sets the given fields, keeps the rest."""
    alert = _alert(old)
    want = replace(alert, **changes)  # type: ignore[arg-type]
    got = _replace_alert(alert, changes)
    assert repr(got) == repr(want)


@given(old=_EVIDENCE, new=_EVIDENCE)
@example(old=("a", "b", "a"), new=("b", "c", "c"))
def test_merged_evidence_keeps_first_places_and_the_newest_twenty(
    old: tuple[str, ...], new: tuple[str, ...]
) -> None:
    """The merge equals the two-step dict merge it replaced."""
    seen = dict.fromkeys(old)
    seen.update(dict.fromkeys(new))
    assert _merge_evidence(old, new) == tuple(seen)[-20:]


@given(value=_MAYBE_FLOAT | st.integers(-(10**6), 10**6), digits=st.sampled_from([0, 1, 2]))
@example(value=float("nan"), digits=1)
@example(value=float("-inf"), digits=1)
def test_round_for_the_wire_drops_what_json_cannot_carry(value: float | None, digits: int) -> None:
    """None, NaN and infinities become None; everything else is round()ed."""
    if value is None or value != value or value in (math.inf, -math.inf):
        assert _round(value, digits) is None
    else:
        assert _round(value, digits) == round(value, digits)
