"""The offender's device is not a distance oracle: what reaches it does not tell approaches
from decoys better than chance (simulator/privacy.py states the measure and its bound)."""

from __future__ import annotations

from simulator.privacy import MAX_AUC, best_auc, measure


def test_his_channel_does_not_separate_approaches_from_decoys():
    """100 approaches and 100 decoys: every feature of his channel has best-threshold AUC <= 0.6
    (chance 0.5; one feature's null standard deviation is 0.041 at this size)."""
    result = measure(100)
    assert result.ok, result.auc
    assert result.worst <= MAX_AUC


def test_the_measure_sees_a_leak_an_automatic_prompt_is_one():
    """With ``offender_prompt: auto`` his ankle monitor hears contact_centre at alarm: the same
    runs separate almost perfectly, so the measure has the power to see a leak."""
    result = measure(30, offender_prompt="auto")
    assert result.auc["first_contact_s"] >= 0.9 and not result.ok


def test_best_threshold_auc_is_symmetric_and_counts_ties_half():
    """0.5 for identical samples, 1.0 for separated ones in either direction."""
    assert best_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert best_auc([3.0, 4.0], [1.0, 2.0]) == best_auc([1.0, 2.0], [3.0, 4.0]) == 1.0
