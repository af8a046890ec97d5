"""perfsim: a discrete-event performance simulator of container networking datapaths.

Public API for notebooks and scripts::

    import perfsim
    table = perfsim.compare(["host", "bridge", "overlay"])   # DataFrame, one row per mode
    result = perfsim.run(perfsim.RunSpec(mode="overlay"))   # frames of one run
"""

from perfsim.errors import ConfigError, PerfsimError
from perfsim.experiment.compare import compare
from perfsim.experiment.config import RunSpec
from perfsim.experiment.run import Result, run
from perfsim.topology.cluster import ClusterSpec

__version__ = "0.1.0"

__all__ = ["ClusterSpec", "ConfigError", "PerfsimError", "Result", "RunSpec", "__version__", "compare", "run"]
