"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from perfsim.core.profile import load_profile
from perfsim.core.sim import Sim


@pytest.fixture
def sim() -> Sim:
    """A simulation with the engineering-estimate profile (``prior``: stable, whatever the
    calibration measured) whose cores never sleep (``Profile.awake``): a path's timing is
    exactly its wires plus its CPU, as the hand-computed timing tests assert (the wake-up of
    idle cores has tests of its own)."""
    return Sim(seed=1, profile=load_profile("prior").awake())


@pytest.fixture(scope="session")
def awake_prior(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of that profile as a YAML file, for tests that run a RunSpec."""
    import yaml

    from perfsim.calibrate.fit import profile_dict

    path = tmp_path_factory.mktemp("profiles") / "awake.yaml"
    path.write_text(yaml.safe_dump(profile_dict(load_profile("prior").awake())))
    return str(path)


# CI runs property tests derandomized: the same examples every run, so a landing never
# depends on luck; locally hypothesis keeps exploring new examples.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True)
    settings.load_profile("ci")
