"""Flow-level (fluid) engine: the datapath reduced to max-min fair sharing of cores and links.

``--engine auto`` runs the packet-level DES while a run has at most :data:`AUTO_DES_MAX_FLOWS`
flows and :data:`AUTO_DES_MAX_CONTAINERS` containers, and the fluid engine beyond: the DES costs
wall time per simulated packet (about 10^5 packets per second) and builds every namespace,
veth, FDB and neighbour entry (a flat overlay holds an entry per remote container on every
host: containers² entries), while the fluid engine's cost grows with the flows only.
"""

from perfsim.fluid.maxmin import maxmin_rates

AUTO_DES_MAX_FLOWS = 256
AUTO_DES_MAX_CONTAINERS = 512


def choose_engine(flows: int, containers: int) -> str:
    """``des`` for a run of at most :data:`AUTO_DES_MAX_FLOWS` flows and
    :data:`AUTO_DES_MAX_CONTAINERS` containers in all, else ``fluid``."""
    return "des" if flows <= AUTO_DES_MAX_FLOWS and containers <= AUTO_DES_MAX_CONTAINERS else "fluid"


__all__ = ["AUTO_DES_MAX_CONTAINERS", "AUTO_DES_MAX_FLOWS", "choose_engine", "maxmin_rates"]
