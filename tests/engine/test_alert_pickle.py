"""An alert survives pickling (open alerts are stored with every commit of their case) unchanged."""

from __future__ import annotations

import pickle

from engine.core import state_unpickle
from engine.core.alerts import Alert, AlertBook, HistoryEntry

# {"x": alert} pickled (protocol 5) before Alert and HistoryEntry had their own __reduce__,
# by the dataclass default (copyreg.__newobj__ and a list of field values as the state);
# the alert is _acknowledged() below
LEGACY = bytes.fromhex(
    "80059553010000000000007d948c0178948c0d656e67696e652e616c65727473948c05416c6572749493942981"
    "945d94288c12412d30313233343536373839616263646566948c0970726f78696d697479948c05616c61726d948c"
    "0c61636b6e6f776c6564676564948c034f2d31948c03532d31948c03502d31944e4741dac326561000004741dac3"
    "26562000004741dac326a12000004741dac326538000004740738800000000008c066c696b656c7994473ff40000"
    "0000000047406f4000000000008c06414d2d313a37948c0656442d313a33948694898c0c77697468696e20353030"
    "206d944741dac3265d800000680d4e68028c0c486973746f7279456e7472799493942981945d94284741dac32656"
    "2000008c046f70656e9468098c06656e67696e65946812656268142981945d94284741dac3265d800000680a6809"
    "8c046f702d37948c0b63616c6c696e672068696d94656286946562732e"
)


def _acknowledged() -> Alert:
    return Alert(
        alert_id="A-0123456789abcdef", kind="proximity", level="alarm", state="acknowledged",
        order="O-1", subject="S-1", protected_person="P-1", zone=None,
        device_time=1795987800.25, raised_at=1795987800.5, deadline=1795988100.5,
        episode_start=1795987790.0, distance_m=312.5, certainty="likely", closing_speed_mps=1.25,
        time_to_contact_s=250.0, evidence=("AM-1:7", "VD-1:3"), late=False, detail="within 500 m",
        updated_at=1795987830.0, target="P-1", device=None,
        history=(
            HistoryEntry(1795987800.5, "open", "alarm", "engine", "within 500 m"),
            HistoryEntry(1795987830.0, "acknowledged", "alarm", "op-7", "calling him"),
        ),
    )  # fmt: skip


def test_an_alert_round_trips_equal() -> None:
    """Every field, history included, comes back equal, and the copy acts like the original."""
    alert = _acknowledged()
    back = pickle.loads(pickle.dumps(alert, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == alert and repr(back) == repr(alert)
    assert back.to_wire() == alert.to_wire()


def test_an_alert_pickles_as_one_tuple_of_its_values() -> None:
    """No per-field state: the class once, then the values; history entries as tuples too."""
    blob = pickle.dumps(_acknowledged(), protocol=pickle.HIGHEST_PROTOCOL)
    assert b"copyreg" not in blob and blob.count(b"HistoryEntry") == 1


def test_an_alert_pickled_before_its_reduce_still_loads() -> None:
    """Alerts stored by earlier versions load equal to the alert they were made from (read as
    stored parts are: the compiled build needs state_unpickle's stand-ins for the old form)."""
    back = state_unpickle.loads(LEGACY)["x"]
    assert back == _acknowledged() and repr(back) == repr(_acknowledged())


def test_alerts_restored_from_a_pickled_book_continue_their_episodes() -> None:
    """A book restored from pickled alerts raises, updates and clears as the original."""
    book = AlertBook()
    kw = {"order": "O-1", "kind": "exclusion", "target": "Z-1", "subject": "S-1"}
    book.raise_or_update(**kw, level="warning", now=100.0, device_time=99.0, episode_start=99.0,
                         distance_m=40.0, evidence=("k1",))  # fmt: skip
    twin = AlertBook(alerts=pickle.loads(pickle.dumps(book.alerts)), open_by_key=dict(book.open_by_key))
    for b in (book, twin):
        assert b.raise_or_update(**kw, level="warning", now=101.0, device_time=100.0,
                                 episode_start=99.0, evidence=("k2",)) is None  # fmt: skip
    rises = [
        b.raise_or_update(**kw, level="alarm", now=102.0, device_time=101.0, episode_start=99.0)
        for b in (book, twin)
    ]
    assert rises[0] == rises[1] and rises[0] is not None
    assert rises[0].alert.evidence == ("k1", "k2") and rises[0].alert.distance_m == 40.0
    ends = [b.clear_episode("O-1", "exclusion", "Z-1", 103.0, "left", 102.5) for b in (book, twin)]
    assert ends[0] == ends[1] and book.alerts == twin.alerts
