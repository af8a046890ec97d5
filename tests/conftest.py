"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from perfsim.core.sim import Sim


@pytest.fixture
def sim() -> Sim:
    return Sim(seed=1)


# CI runs property tests derandomized: the same examples every run, so a landing never
# depends on luck; locally hypothesis keeps exploring new examples.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")
