"""Where the evidence chain lives: a JSON Lines file (production, replay) or memory (tests).

The file is append-only: one canonical JSON record per line, line ``n`` is
record ``seq == n``.  Opening an existing log re-reads its last record to
continue the chain.  A crash can leave a torn last line (written without its
newline); opening such a log moves the fragment to ``<log>.torn-<offset>``
(nothing is deleted, the fragment was never a complete record) and truncates
the log to its last complete record, with a warning in the log naming the
fragment file, the offset and the byte count: an operator must learn that an
evidence write was cut short (and whether the fragment held a whole record that
only lacked its newline) rather than find an unexplained file later.  Any other
damage is reported, never repaired: evidence is not rewritten.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from engine.evidence.chain import ChainBroken, EvidenceError, Record

_TAIL_CHUNK = 1 << 16

log = logging.getLogger(__name__)


class MemoryStore:
    """Records in a list; the reference implementation of ``RecordStore``."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._records: list[Record] = list(records)

    def head(self) -> Record | None:
        return self._records[-1] if self._records else None

    def write(self, record: Record) -> None:
        self._records.append(record)

    def flush(self) -> None:
        return None

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        for rec in self._records:
            if rec.seq >= start and (stop is None or rec.seq < stop):
                yield rec

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._records)


class JsonlStore:
    """An append-only JSON Lines log; ``fsync=True`` makes every ``flush`` reach the disk."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._head = self._recover_tail()
        self._fh: IO[str] | None = None

    # --- RecordStore -----------------------------------------------------------------------
    def head(self) -> Record | None:
        return self._head

    def write(self, record: Record) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8", newline="\n")
        self._fh.write(record.line() + "\n")
        self._head = record

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[Record]:
        self.flush()
        for rec in read_records(self.path):
            if stop is not None and rec.seq >= stop:
                return
            if rec.seq >= start:
                yield rec

    def __enter__(self) -> JsonlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the file (appending again reopens it)."""
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # --- opening ---------------------------------------------------------------------------
    def _recover_tail(self) -> Record | None:
        """The last complete record; a torn final line is moved aside, not lost."""
        size = self.path.stat().st_size
        if size == 0:
            return None
        with open(self.path, "rb") as fh:
            end, buf = size, b""
            while True:  # read back until the last complete line is wholly in ``buf``
                start = max(0, end - _TAIL_CHUNK)
                fh.seek(start)
                buf = fh.read(end - start) + buf
                end = start
                if buf.count(b"\n") >= 2 or start == 0:
                    break
        last_nl = buf.rfind(b"\n")
        torn = buf[last_nl + 1 :]
        if torn:
            self._set_aside_torn(size - len(torn))
        if last_nl < 0:
            return None
        line = buf[buf.rfind(b"\n", 0, last_nl) + 1 : last_nl]
        try:
            return Record.from_json(json.loads(line))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ChainBroken(None, f"{self.path}: last line is not a record ({exc})") from exc

    def _set_aside_torn(self, offset: int) -> None:
        """Move the bytes after the last newline to a ``.torn-<offset>`` file and say so.

        The fragment file is created exclusively (a second torn write at the same
        offset gets ``-1``, ``-2``, ...), so an earlier fragment is never
        overwritten, and it reaches the disk before the log is truncated.
        """
        with open(self.path, "r+b") as fh:
            fh.seek(offset)
            fragment = fh.read()
            aside = self._write_aside(offset, fragment)
            fh.truncate(offset)
        try:
            Record.from_json(json.loads(fragment))
            what = "a complete record without its newline"
        except (ValueError, UnicodeDecodeError, ChainBroken):
            what = "a partial record"
        log.warning(
            "evidence log %s: torn last line (%s, %d bytes at offset %d) moved to %s; "
            "the log continues from its last complete record",
            self.path,
            what,
            len(fragment),
            offset,
            aside,
        )

    def _write_aside(self, offset: int, fragment: bytes) -> Path:
        for n in range(10_000):
            aside = Path(f"{self.path}.torn-{offset}" + (f"-{n}" if n else ""))
            try:
                fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as out:
                out.write(fragment)
                out.flush()
                os.fsync(out.fileno())
            return aside
        raise EvidenceError(f"{self.path}: no free name for the torn fragment at offset {offset}")


def read_records(path: str | Path) -> Iterator[Record]:
    """Parse a JSON Lines file of records (a log, an export or a bundle segment), in file order.

    Structure errors raise ``ChainBroken`` naming the line; hashes are checked
    by ``verify_records``, not here.
    """
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ChainBroken(None, f"{path}:{n}: not JSON ({exc})") from exc
            try:
                yield Record.from_json(obj)
            except ChainBroken as exc:
                raise ChainBroken(exc.seq, f"{path}:{n}: {exc.reason}") from exc


def open_log(path: str | Path, *, fsync: bool = False) -> JsonlStore:
    """Open (or create) an evidence log; ``EvidenceError`` if the path is a directory."""
    p = Path(path)
    if p.is_dir():
        raise EvidenceError(f"{p}: is a directory, expected an evidence log file")
    return JsonlStore(p, fsync=fsync)
