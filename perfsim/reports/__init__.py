"""Reports of ``perfsim compare``: matplotlib figures and one self-contained HTML page."""

from perfsim.reports.figures import headline_figure, latency_figure, stage_cpu_figure
from perfsim.reports.html import write_report

__all__ = ["headline_figure", "latency_figure", "stage_cpu_figure", "write_report"]
