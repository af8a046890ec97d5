"""Shared fixtures."""

from __future__ import annotations

import pytest

from perfsim.core.sim import Sim


@pytest.fixture
def sim() -> Sim:
    return Sim(seed=1)
