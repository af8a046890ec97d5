"""Scenario files: a versioned YAML format describing a whole experiment.

``load_file(path)`` parses and validates a file into a :class:`Scenario`; ``check(scenario)``
validates what needs the topology (reachability, published ports) and returns the compiled
:class:`~perfsim.experiment.simulate.Experiment`; ``perfsim run`` / ``perfsim check`` are in
:mod:`perfsim.scenario.cli`.  The format is documented in ``docs/scenario-format.md``.
"""

from perfsim.scenario.compile import Checked, check, compile_scenario
from perfsim.scenario.load import load_dict, load_file, load_text
from perfsim.scenario.model import Scenario

__all__ = ["Checked", "Scenario", "check", "compile_scenario", "load_dict", "load_file", "load_text"]
