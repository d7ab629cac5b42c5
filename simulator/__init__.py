"""Scenario generation with ground truth, trace replay and publishing, and scoring."""
