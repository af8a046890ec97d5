"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from perfsim.core.profile import Profile, StageCost, load_profile
from perfsim.core.sim import Sim


def awake_profile(name: str = "default") -> Profile:
    """``name`` with ``idle_wakeup`` = 0: cores start work the instant it arrives, so a path's
    timing is exactly its wires plus its CPU (what the hand-computed timing tests assert; the
    wake-up of idle cores has tests of its own)."""
    p = load_profile(name)
    return Profile(p.name, {**p.stages, "idle_wakeup": StageCost(0.0, 0.0)}, p.provenance)


@pytest.fixture
def sim() -> Sim:
    return Sim(seed=1, profile=awake_profile())


# CI runs property tests derandomized: the same examples every run, so a landing never
# depends on luck; locally hypothesis keeps exploring new examples.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")
