"""Run specifications, single runs and comparisons."""
