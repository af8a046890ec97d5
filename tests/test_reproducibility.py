"""Same seed -> identical frames; different seeds -> different samples."""

from __future__ import annotations

import pandas as pd

from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import run
from perfsim.topology.cluster import ClusterSpec

SPEC = dict(mode="overlay", workload="tcp_rr", streams=3, duration_s=0.01, warmup_s=0.002,
            cluster=ClusterSpec(hosts=3, cores=4))


def test_same_seed_gives_identical_dataframes() -> None:
    a, b = run(RunSpec(seed=7, **SPEC)), run(RunSpec(seed=7, **SPEC))
    for name in ("flows", "stages", "cores", "links", "drops"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.latencies_s.tolist() == b.latencies_s.tolist()


def test_different_seeds_give_different_samples() -> None:
    a, b = run(RunSpec(seed=1, **SPEC)), run(RunSpec(seed=2, **SPEC))
    assert a.latencies_s.tolist() != b.latencies_s.tolist()
