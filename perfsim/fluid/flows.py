"""Flows as parallel numpy arrays — how the fluid engine holds 10^5 flows — built from a
:class:`~perfsim.experiment.config.RunSpec` (vectorised :meth:`RunSpec.slots`) or from the
explicit flow plans of a scenario."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from perfsim.experiment.config import RunSpec
    from perfsim.experiment.simulate import FlowPlan

IntArray = npt.NDArray[np.int64]


@dataclass
class FlowSet:
    """Flows as parallel arrays (one entry per flow)."""

    workload: npt.NDArray[Any]
    message_size: IntArray
    client_host: IntArray
    client_container: IntArray
    server_host: IntArray
    server_container: IntArray
    client_port: IntArray
    server_port: IntArray
    rate_bps: npt.NDArray[np.float64]
    group: npt.NDArray[Any]

    def __len__(self) -> int:
        return len(self.workload)


def flows_of_spec(spec: RunSpec) -> FlowSet:
    """The flows :func:`perfsim.experiment.run.flow_plans` would start, without building them
    one by one: the same slots (:meth:`RunSpec.slots`) and ports."""
    from perfsim.experiment.run import client_port, server_port

    n = spec.streams
    i = np.arange(n, dtype=np.int64)
    hosts, m = spec.cluster.hosts, spec.containers_per_host
    cross = spec.placement == "cross-host"
    if spec.cluster.testbed:
        c = i % m
        ch = np.zeros(n, dtype=np.int64)
        sh = ch + 1 if cross else ch
        cc, sc = (c, c) if cross else (2 * c % m, (2 * c + 1) % m)
    else:
        ch = i % hosts
        if cross:
            cc = (i // hosts) % m
            sh, sc = (ch + 1) % hosts, cc
        else:
            cc = (2 * (i // hosts)) % m
            sh, sc = ch, (cc + 1) % m
    return FlowSet(
        workload=np.full(n, spec.workload, dtype=object),
        message_size=np.full(n, spec.message_bytes, dtype=np.int64),
        client_host=ch, client_container=cc, server_host=sh, server_container=sc,
        client_port=client_port(i), server_port=server_port(i),
        rate_bps=np.zeros(n), group=np.full(n, spec.workload, dtype=object),
    )


def flows_of_plans(plans: Sequence[FlowPlan]) -> FlowSet:
    """The flows of explicit plans (a scenario file's)."""
    return FlowSet(
        workload=np.array([p.workload for p in plans], dtype=object),
        message_size=np.array([p.message_size for p in plans], dtype=np.int64),
        client_host=np.array([p.client[0] for p in plans], dtype=np.int64),
        client_container=np.array([p.client[1] for p in plans], dtype=np.int64),
        server_host=np.array([p.server[0] for p in plans], dtype=np.int64),
        server_container=np.array([p.server[1] for p in plans], dtype=np.int64),
        client_port=np.array([p.client_port for p in plans], dtype=np.int64),
        server_port=np.array([p.server_port for p in plans], dtype=np.int64),
        rate_bps=np.array([p.rate_bps for p in plans], dtype=np.float64),
        group=np.array([p.group for p in plans], dtype=object),
    )
