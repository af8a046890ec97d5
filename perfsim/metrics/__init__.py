"""Metrics: tidy pandas DataFrames built from a finished run."""
