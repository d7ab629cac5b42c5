"""The duplicate memory of a device: exactly "the last N distinct seqs, oldest forgotten first".

``SeqMemory`` replaced an ``OrderedDict`` used as a FIFO set because a device's state is
stored with every commit of its case and 8,192 integers were most of it.  These
properties check it against that reference, through its stored form too (engine.core.state_codec).
"""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.msgpack import decode, encode

from engine.core.state_codec import seq_memory_from, seq_memory_record
from engine.core.state_schema import SeqMemoryRecord
from engine.core.tracks import DeviceTrack, SeqMemory

seq_streams = st.lists(
    st.one_of(st.integers(-5, 60), st.integers(0, 2**40)), min_size=0, max_size=300
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 40), seqs=seq_streams, counting=st.integers(0, 200))
def test_remembers_exactly_what_a_fifo_set_remembers(limit: int, seqs: list[int], counting: int) -> None:
    memory, reference = SeqMemory(limit), OrderedDict[int, None]()
    stream = [*range(1000, 1000 + counting), *seqs]  # a device counting up, then anything
    for seq in stream:
        assert (seq in memory) == (seq in reference)
        if seq not in reference:
            memory.add(seq)
            reference[seq] = None
            if len(reference) > limit:
                reference.popitem(last=False)
        copy = seq_memory_from(decode(encode(seq_memory_record(memory)), type=SeqMemoryRecord))
        assert copy == memory
        assert all(s in copy for s in reference) and len(copy) == len(reference)


def test_a_counting_device_is_stored_in_a_few_bytes() -> None:
    track = DeviceTrack("AM-1")
    for seq in range(20_000):
        assert not track.is_duplicate(seq)
    assert track.is_duplicate(19_999) and not track.is_duplicate(100)
    assert len(encode(seq_memory_record(track.seen))) < 200
