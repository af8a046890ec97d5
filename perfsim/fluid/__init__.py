"""Flow-level (fluid) engine: the datapath reduced to max-min fair sharing of cores and links."""

from perfsim.fluid.maxmin import maxmin_rates

__all__ = ["maxmin_rates"]
