"""Topology builders: a cluster of hosts, then one builder per Docker network mode."""
