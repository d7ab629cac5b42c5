"""The alert book's hand-built copies and merges give what the plain dataclass code gives."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import example, given
from hypothesis import strategies as st

from engine.core.alert_records import LEVEL_RANK, Alert, HistoryEntry, _round
from engine.core.alerts import AlertBook, _merge_evidence

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


_LEVELS = st.sampled_from(["info", "warning", "alarm", "critical"])


def _by_replace(
    book: AlertBook, current: Alert, level: str, now: float, device_time: float,
    measured: dict[str, object], detail: str, allow_lower: bool,
) -> Alert:
    """What ``raise_or_update`` made of an open alert when it copied with ``dataclasses.replace``."""
    values = {
        "distance_m": measured["distance_m"] if measured["distance_m"] is not None else current.distance_m,
        "certainty": measured["certainty"] or current.certainty,
        "closing_speed_mps": measured["closing_speed_mps"],
        "time_to_contact_s": measured["time_to_contact_s"],
        "evidence": _merge_evidence(current.evidence, measured["evidence"]),  # type: ignore[arg-type]
    }
    new, old = LEVEL_RANK[level], LEVEL_RANK[current.level]
    if not (new > old or (allow_lower and new < old)):
        return replace(current, **values)  # type: ignore[arg-type]
    deadline = min(current.deadline, book.deadline_for(current.kind, level, now)) if new > old else current.deadline
    state = "open" if new > old and current.state == "acknowledged" else current.state
    return replace(
        current, level=level, state=state, deadline=deadline, device_time=device_time,
        detail=detail or current.detail, updated_at=now,
        history=(*current.history, HistoryEntry(now, state, level, "engine", detail, "level")),  # type: ignore[arg-type]
        **values,  # type: ignore[arg-type]
    )


@given(
    old=_EVIDENCE, level=_LEVELS, state=st.sampled_from(["open", "acknowledged", "escalated"]),
    allow_lower=st.booleans(), detail=st.text(max_size=5),
    measured=st.fixed_dictionaries({
        "distance_m": _MAYBE_FLOAT, "certainty": st.none() | st.sampled_from(["", "possible"]),
        "closing_speed_mps": _MAYBE_FLOAT, "time_to_contact_s": _MAYBE_FLOAT, "evidence": _EVIDENCE,
    }),
)  # fmt: skip
def test_an_update_equals_dataclasses_replace(
    old: tuple[str, ...], level: str, state: str, allow_lower: bool, detail: str,
    measured: dict[str, object],
) -> None:
    """Quiet updates, rises and debounced falls copy the alert and set exactly the fields the
    dataclasses.replace version set."""
    book = AlertBook()
    current = replace(_alert(old), state=state)  # type: ignore[arg-type]
    book.alerts[current.alert_id] = current
    book.open_by_key[(current.order, current.kind, current.target)] = current.alert_id
    want = _by_replace(book, current, level, 10.0, 9.0, measured, detail, allow_lower)
    book.raise_or_update(
        order=current.order, kind=current.kind, target=current.target, level=level,  # type: ignore[arg-type]
        now=10.0, device_time=9.0, episode_start=4.0,
        distance_m=measured["distance_m"], certainty=measured["certainty"],  # type: ignore[arg-type]
        closing_speed_mps=measured["closing_speed_mps"],  # type: ignore[arg-type]
        time_to_contact_s=measured["time_to_contact_s"],  # type: ignore[arg-type]
        evidence=measured["evidence"], detail=detail, allow_lower=allow_lower,  # type: ignore[arg-type]
    )
    got = book.alerts[current.alert_id]
    assert got is not current and repr(got) == repr(want)
    assert repr(current) == repr(_alert(old)).replace("'acknowledged'", repr(state))  # untouched


@given(old=_EVIDENCE, state=st.sampled_from(["acknowledged", "escalated", "closed"]))
def test_a_transition_equals_dataclasses_replace(old: tuple[str, ...], state: str) -> None:
    """An operator's or the engine's transition sets state, time and history, nothing else."""
    book = AlertBook()
    current = replace(_alert(old), state="open")
    book.alerts[current.alert_id] = current
    book.open_by_key[(current.order, current.kind, current.target)] = current.alert_id
    change = book._transition(current, state, 11.0, "op-2", "note", "ack")  # type: ignore[arg-type]
    want = replace(
        current, state=state, updated_at=11.0,  # type: ignore[arg-type]
        history=(*current.history, HistoryEntry(11.0, state, current.level, "op-2", "note", "ack")),  # type: ignore[arg-type]
    )
    assert repr(change.alert) == repr(want) and book.alerts[current.alert_id] is change.alert


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


@given(before=st.none() | _LEVELS, level=_LEVELS, state=st.sampled_from(["open", "acknowledged"]))
def test_writes_detail_says_when_a_raise_keeps_the_detail_it_is_given(
    before: str | None, level: str, state: str
) -> None:
    """Rules skip formatting a detail exactly when the book would not keep it."""
    book = AlertBook()
    if before is not None:
        book.raise_or_update(order="o1", kind="proximity", target="p1", level=before,  # type: ignore[arg-type]
                             now=1.0, device_time=1.0, episode_start=1.0, detail="old")  # fmt: skip
        if state == "acknowledged":
            book.act(book.open_for("o1", "proximity", "p1").alert_id, "ack", "op", "", 2.0)  # type: ignore[union-attr]
    wanted = book.writes_detail("o1", "proximity", "p1", level)  # type: ignore[arg-type]
    book.raise_or_update(order="o1", kind="proximity", target="p1", level=level,  # type: ignore[arg-type]
                         now=3.0, device_time=3.0, episode_start=1.0, detail="new")  # fmt: skip
    alert = book.open_for("o1", "proximity", "p1")
    assert alert is not None and (alert.detail == "new") == wanted
