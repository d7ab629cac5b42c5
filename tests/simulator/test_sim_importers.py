"""GPX and CSV tracks become contract fixes and traces the engine's decoder accepts."""

from __future__ import annotations

import json

import pytest

from devices.decode import decode_message
from devices.timeutil import parse_time
from simulator.errors import ImportTrackError
from simulator.importers import import_track, parse_csv, parse_gpx

GPX = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><name>walk</name><trkseg>
    <trkpt lat="51.92291" lon="4.47059"><ele>2.5</ele><time>2026-11-23T10:15:02Z</time><hdop>1.2</hdop></trkpt>
    <trkpt lat="51.92300" lon="4.47100"><ele>2.7</ele><time>2026-11-23T10:14:02.500Z</time></trkpt>
  </trkseg></trk>
</gpx>"""


def test_gpx_track_points_become_fixes_in_time_order():
    """lat/lon/time read, ele dropped, hdop x 5 m as accuracy, seq from 1 in time order."""
    first, second = parse_gpx(GPX, "PH-1", acc_default=12.0)
    assert first == {
        "v": 1,
        "device": "PH-1",
        "seq": 1,
        "t": "2026-11-23T10:14:02.500Z",
        "lat": 51.923,
        "lon": 4.471,
        "acc": 12.0,
    }
    assert second["seq"] == 2 and second["acc"] == pytest.approx(6.0) and "ele" not in second


def test_gpx_without_time_or_points_is_refused():
    """A fix needs its time; an empty document has no fixes."""
    with pytest.raises(ImportTrackError, match="no <time>"):
        parse_gpx('<gpx><trk><trkseg><trkpt lat="1" lon="2"/></trkseg></trk></gpx>', "D")
    with pytest.raises(ImportTrackError, match="no track points"):
        parse_gpx("<gpx/>", "D")
    with pytest.raises(ImportTrackError, match="not a GPX"):
        parse_gpx("<gpx", "D")


CSV = """device,t,lat,lon,acc,spd,src,batt
AM-1,2026-11-23T10:00:00Z,51.9,4.4,8.5,1.4,gnss,80
AM-2,1795428000000,51.8,4.3,150,,wifi,
AM-1,2026-11-23T09:59:00Z,51.9001,4.4001,9,,,
"""


def test_csv_rows_become_fixes_per_device():
    """Each device numbered from 1 in time order; optional columns only when filled; epoch ms accepted."""
    fixes = parse_csv(CSV)
    by = {(f["device"], f["seq"]): f for f in fixes}
    assert set(by) == {("AM-1", 1), ("AM-1", 2), ("AM-2", 1)}
    assert by[("AM-1", 1)]["t"] == "2026-11-23T09:59:00.000Z" and "spd" not in by[("AM-1", 1)]
    assert by[("AM-1", 2)] | {} == {
        "v": 1,
        "device": "AM-1",
        "seq": 2,
        "t": "2026-11-23T10:00:00.000Z",
        "lat": 51.9,
        "lon": 4.4,
        "acc": 8.5,
        "spd": 1.4,
        "src": "gnss",
        "batt": 80,
    }
    assert parse_time(by[("AM-2", 1)]["t"]) == 1795428000.0 and by[("AM-2", 1)]["src"] == "wifi"


def test_csv_device_argument_selects_rows_or_names_a_device_less_file():
    """With a device id only its rows are kept; without a device column every row is that device's."""
    assert {f["device"] for f in parse_csv(CSV, "AM-2")} == {"AM-2"}
    bare = parse_csv("t,lat,lon\n2026-11-23T10:00:00Z,51.9,4.4\n", "PH-9", acc_default=20.0)
    assert bare[0]["device"] == "PH-9" and bare[0]["acc"] == 20.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t,lat,lon\n2026-11-23T10:00:00Z,51.9,4.4\n", "missing columns"),
        ("device,t,lat,lon,acc\nA,2026-11-23T10:00:00Z,95,4.4,5\n", "out of range"),
        ("device,t,lat,lon,acc\nA,2026-11-23T10:00:00Z,51.9,4.4,0\n", "acc must be > 0"),
        ("device,t,lat,lon,acc\nA,yesterday,51.9,4.4,5\n", "CSV line 2"),
    ],
)
def test_csv_mistakes_are_refused(text, message):
    """Bad rows name the problem."""
    with pytest.raises(ImportTrackError, match=message):
        parse_csv(text)


def test_import_track_writes_a_trace_the_decoder_accepts(tmp_path):
    """GPX and CSV files become traces whose every line decodes without rejection."""
    gpx, csv_file = tmp_path / "walk.gpx", tmp_path / "dump.csv"
    gpx.write_text(GPX)
    csv_file.write_text(CSV)
    for src, device, expected in ((gpx, "PH-1", 2), (csv_file, None, 3)):
        out = tmp_path / f"{src.stem}.jsonl"
        assert import_track(src, out, device) == expected
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [parse_time(x["arrival"]) for x in lines] == sorted(
            parse_time(x["arrival"]) for x in lines
        )
        for x in lines:
            d = decode_message(x["topic"], json.dumps(x["payload"]), parse_time(x["arrival"]))
            assert len(d.fixes) == 1 and d.rejections == []
    with pytest.raises(ImportTrackError, match="needs a device"):
        import_track(gpx, tmp_path / "x.jsonl")
    with pytest.raises(ImportTrackError, match="unknown track format"):
        import_track(gpx, tmp_path / "x.jsonl", "D", fmt="kml")
