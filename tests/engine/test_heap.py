"""engine.runtime.heap: survivors of a full pass are frozen, so the next full pass walks only new objects."""

from __future__ import annotations

import gc

from engine.runtime.heap import FreezeAfterFullPass


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_a_full_pass_freezes_its_survivors_and_the_policy_can_be_removed():
    policy = FreezeAfterFullPass().install()
    try:
        kept = [Node() for _ in range(1000)]
        before = gc.get_freeze_count()
        gc.collect()
        assert policy.passes == 1
        assert gc.get_freeze_count() >= before + len(kept)
        gc.collect(0)  # a young pass freezes nothing
        assert policy.passes == 1
    finally:
        policy.remove()
        gc.unfreeze()
    assert policy not in gc.callbacks
    gc.collect()
    assert policy.passes == 1


def test_garbage_cycles_are_still_collected_by_the_pass_that_sees_them_first():
    policy = FreezeAfterFullPass().install()
    try:
        for _ in range(100):
            a, b = Node(), Node()
            a.other, b.other = b, a  # a cycle: reference counting alone cannot free it
        del a, b
        assert gc.collect() >= 200
    finally:
        policy.remove()
        gc.unfreeze()


def test_installing_twice_adds_one_callback():
    policy = FreezeAfterFullPass()
    policy.install().install()
    try:
        assert gc.callbacks.count(policy) == 1
    finally:
        policy.remove()
