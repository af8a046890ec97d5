"""Max-min solver benchmark: how long :func:`perfsim.fluid.maxmin_rates` takes at scale.

Instance (seeded): ``N`` flows over ``M = N / 10`` resources, half of them cores (capacity
1.0 core-s/s, 0.5-2 ns of CPU per byte) and half links (1-100 Gbit/s, 8 bits per byte).  Each
flow crosses 6 resources drawn at random (a repeated draw counts twice, so "about 6"), and one
flow in five has a cap (a window limit) of 10-1000 MB/s.  The solution is checked for
feasibility (exit status 1 if a resource is over capacity by more than 1e-9 relative).

Output, one line per size, then the peak resident memory::

    maxmin flows=<N> resources=<M> solve_s=<t>
    memory max_rss_mb=<N>

Usage: ``python benchmarks/maxmin.py [--quick] [--seed S]`` (``--quick``: 1e3 and 1e4 flows
only; the default adds 1e5).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import scipy.sparse as sp

from perfsim.fluid import maxmin_rates

PATH_LEN = 6


def instance(n_flows: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Random ``(demand, capacity, cap_per_flow)`` with ``n_flows`` flows (see the docstring)."""
    rng = np.random.default_rng(seed)
    n_res = max(2, n_flows // 10)
    n_cores = n_res // 2
    capacity = np.concatenate([np.ones(n_cores), rng.uniform(1e9, 100e9, n_res - n_cores)])
    per_byte = np.concatenate([rng.uniform(0.5e-9, 2e-9, n_cores), np.full(n_res - n_cores, 8.0)])
    rows = rng.integers(0, n_res, size=(n_flows, PATH_LEN)).ravel()
    cols = np.repeat(np.arange(n_flows), PATH_LEN)
    demand = sp.csr_matrix((per_byte[rows], (rows, cols)), shape=(n_res, n_flows))
    caps = np.where(rng.random(n_flows) < 0.2, rng.uniform(10e6, 1000e6, n_flows), np.inf)
    return demand, capacity, caps


def _emit(line: str) -> None:
    """One result line on stdout, flushed (the 1e5 solve comes last)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e3 and 1e4 flows only")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    status = 0
    for n in sizes:
        demand, capacity, caps = instance(n, args.seed)
        start = time.perf_counter()
        rates = maxmin_rates(demand, capacity, caps)
        solve_s = time.perf_counter() - start
        used = demand @ rates
        if np.any(used > capacity * (1 + 1e-9)) or np.any(rates > caps * (1 + 1e-12)):
            sys.stderr.write(f"error: maxmin flows={n}: a resource is over capacity\n")
            status = 1
        _emit(f"maxmin flows={n} resources={demand.shape[0]} solve_s={solve_s:.3f}")
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    _emit(f"memory max_rss_mb={max_rss_mb:.0f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
