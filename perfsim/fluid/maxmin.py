"""Max-min fair sharing of CPU cores and links among flows (progressive filling).

Model
-----
Flow ``f`` moves data at ``rate[f]`` bytes per second.  Every unit of that rate consumes
``demand[r, f]`` of resource ``r``: CPU seconds per byte on a core (whose capacity is 1.0
core-second per second), or 8 bits per byte on a link (whose capacity is its rate in bits per
second).  An allocation is feasible when, for every resource,

    sum_f demand[r, f] * rate[f] <= capacity[r]      and      rate[f] <= cap_per_flow[f].

Among feasible allocations we return the *max-min fair* one (SimGrid's LMM model, see its
``Models.rst``): no flow's ``rate / weight`` can grow without lowering that of a flow whose
``rate / weight`` is not larger.  It is computed by progressive filling ("water filling"):
every unfrozen flow starts at 0 and grows at speed ``weight[f]`` (so all unfrozen flows share
one *level* ``t`` and ``rate[f] = weight[f] * t``); the next event is the smallest of

* a resource saturating: ``remaining[r] / sum_{unfrozen f} demand[r, f] * weight[f]``,
* an unfrozen flow reaching its own cap: ``cap_per_flow[f] / weight[f] - t``;

the level rises by that increment, saturated resources are closed and every flow crossing one
(or at its cap) is frozen at its current rate; repeat until every flow is frozen.

With ``weight = 1`` (the default) flows sharing a bottleneck get equal *rates* whatever each
one costs there: this is what a FIFO server does with flows that offer packets at the same
pace, and what SimGrid does.  ``weight[f] = 1 / cpu_cost[f]`` instead shares a core's *time*
equally, as CFS does between threads: a flow that costs twice as much per byte then gets half
the rate.

Worked example (the DESIGN's case, checkable by hand).  One core (capacity 1.0) and one
1 Gbit/s link; flows A and B each cost 1 ns of CPU per byte on the core, and B also crosses the
link (8 bits per byte)::

    demand = [[1e-9, 1e-9],     # core: CPU s per byte of A, B
              [0.0,  8.0 ]]     # link: bits per byte
    capacity = [1.0, 1e9]

Step 1: the core could raise both flows by ``1 / 2e-9 = 5e8`` B/s, the link B by
``1e9 / 8 = 1.25e8`` B/s; the link is the bottleneck, so ``t = 1.25e8`` and B freezes at
125 MB/s.  The core has ``1 - 2e-9 * 1.25e8 = 0.75`` core-s/s left.  Step 2: only A remains
on the core, ``0.75 / 1e-9 = 7.5e8``, so A ends at ``1.25e8 + 7.5e8 = 8.75e8`` B/s.  Check:
the core runs ``1e-9 * (8.75e8 + 1.25e8) = 1.0`` — saturated; the link carries exactly 1 Gbit/s.

Cost: each resource saturates once and each flow freezes once, and the matrix entries of a
frozen flow or a saturated resource are visited once, so a solve costs
``O(nnz + iterations * resources)``; 10^5 flows × 10^4 resources take well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from perfsim.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

# Relative tolerance under which two resources (or a resource and a cap) are taken to saturate
# at the same level: it merges ties that rounding would split into many tiny steps.
_TIE_REL = 1e-12


def maxmin_rates(
    demand: Any,
    capacity: npt.ArrayLike,
    cap_per_flow: npt.ArrayLike | None = None,
    *,
    weight: npt.ArrayLike | None = None,
) -> FloatArray:
    """Max-min fair rates (bytes/s) of flows sharing resources (see the module docstring).

    Parameters
    ----------
    demand: ``(resources, flows)`` dense ``np.ndarray`` or scipy sparse matrix/array; entry
        ``[r, f] >= 0`` is how much of resource ``r`` one byte/s of flow ``f`` consumes (CPU
        seconds per byte on a core, 8 bits per byte on a link); 0 means "does not cross".
    capacity: ``(resources,)`` finite capacities ``>= 0`` (1.0 for a core, bits/s for a link).
    cap_per_flow: ``(flows,)`` upper bounds in bytes/s, ``>= 0``; ``inf`` means no cap
        (e.g. a window limit or an application's offered rate).  ``None``: no caps.
    weight: ``(flows,)`` finite weights ``> 0`` (default 1): unfrozen flows grow in proportion
        to their weight, so bottlenecked flows end with equal ``rate / weight``.

    Returns
    -------
    ``(flows,)`` float64 rates in bytes/s.

    Raises
    ------
    ConfigError: bad shapes, negative, NaN or infinite entries, or a flow that crosses no
        resource and has no cap (its rate would be unbounded).
    """
    csr = _as_csr(demand)
    n_res, n_flows = csr.shape
    cap_r = _vector("capacity", capacity, n_res, "resource (row of demand)", allow_inf=False)
    cap_f = (
        np.full(n_flows, np.inf)
        if cap_per_flow is None
        else _vector(
            "cap_per_flow", cap_per_flow, n_flows, "flow (column of demand)", allow_inf=True
        )
    )
    w = np.ones(n_flows)
    if weight is not None:
        w = _vector("weight", weight, n_flows, "flow (column of demand)", allow_inf=False)
    if n_flows and not np.all(w > 0):
        f = int(np.flatnonzero(~(w > 0))[0])
        raise ConfigError(f"weight[{f}]", float(w[f]), "a finite number > 0")
    csc = csr.tocsc()
    flows_res = np.diff(csc.indptr)  # resources crossed by each flow
    unbounded = (flows_res == 0) & np.isinf(cap_f)
    if np.any(unbounded):
        f = int(np.flatnonzero(unbounded)[0])
        raise ConfigError(
            f"cap_per_flow[{f}]",
            float(cap_f[f]),
            f"a finite cap: flow {f} crosses no resource and has no cap",
        )
    return _fill(csr, csc, cap_r, cap_f, w)


def maxmin_rates_checked(csr: sp.csr_matrix, csc: sp.csc_matrix, capacity: FloatArray,
                         cap_per_flow: FloatArray) -> FloatArray:
    """:func:`maxmin_rates` (unit weights) on a demand matrix already checked and converted
    (``csr`` and its ``csc``, as :func:`maxmin_rates` makes them): for solving one matrix
    many times with other capacities and caps, which must be valid (>= 0, caps may be inf)."""
    return _fill(csr, csc, np.asarray(capacity, dtype=np.float64), np.asarray(cap_per_flow, dtype=np.float64),
                 np.ones(csr.shape[1]))


def checked_matrices(demand: Any) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``demand`` checked and converted for :func:`maxmin_rates_checked`: (csr, csc)."""
    csr = _as_csr(demand)
    return csr, csr.tocsc()


def _fill(
    csr: sp.csr_matrix, csc: sp.csc_matrix, cap_r: FloatArray, cap_f: FloatArray, w: FloatArray
) -> FloatArray:
    n_res, n_flows = csr.shape
    rate = np.zeros(n_flows)
    active = np.ones(n_flows, dtype=bool)
    # Per resource: capacity left, weighted demand of unfrozen flows, count of unfrozen flows.
    remaining = cap_r.copy()
    load = np.asarray(csr @ w, dtype=np.float64).ravel()
    count = np.diff(csr.indptr).astype(np.int64)
    open_res = count > 0
    # Cap levels (cap / weight) in increasing order, scanned with a pointer.
    cap_level = cap_f / w
    order = np.argsort(cap_level, kind="stable")
    sorted_level = cap_level[order]
    ptr = 0
    t = 0.0
    n_active = n_flows
    while n_active:
        while ptr < n_flows and not active[order[ptr]]:
            ptr += 1
        idx = np.flatnonzero(open_res)
        incr = remaining[idx] / load[idx] if idx.size else np.empty(0)
        d_res = float(incr.min()) if idx.size else np.inf
        # Every unfrozen flow whose cap level is reached before the next resource saturates
        # freezes at its cap now, in one batch: with them frozen, the others use no more of any
        # resource than projected, so no resource saturates before those caps are reached.
        hi = (np.searchsorted(sorted_level, (t + d_res) * (1 + _TIE_REL) + _TIE_REL, side="right")
              if d_res < np.inf else n_flows)
        if hi > ptr:
            cand = order[ptr:hi]
            capped = cand[active[cand]]
            ptr = int(hi)
            if capped.size:
                grow = np.maximum(cap_level[capped] - t, 0.0)
                _freeze(csc, capped, w, n_res, load, count, remaining, open_res, active, weights_extra=grow)
                n_active -= capped.size
                rate[capped] = cap_f[capped]
                continue
        if d_res == np.inf:  # unreachable: every flow crosses a resource or has a finite cap
            raise RuntimeError("max-min filling found no bottleneck")
        d = max(d_res, 0.0)
        t += d
        remaining[idx] -= d * load[idx]
        np.maximum(remaining, 0.0, out=remaining)
        sat = idx[incr <= d * (1 + _TIE_REL) + _TIE_REL * t]
        remaining[sat] = 0.0
        open_res[sat] = False
        flows = csr.indices[_spans(csr.indptr, sat)]
        newly = np.unique(flows[active[flows]])
        if newly.size == 0:
            continue
        rate[newly] = np.minimum(w[newly] * t, cap_f[newly])
        _freeze(csc, newly, w, n_res, load, count, remaining, open_res, active, weights_extra=None)
        n_active -= newly.size
    return rate


def _freeze(
    csc: sp.csc_matrix, newly: IntArray, w: FloatArray, n_res: int, load: FloatArray,
    count: npt.NDArray[np.int64], remaining: FloatArray, open_res: npt.NDArray[np.bool_],
    active: npt.NDArray[np.bool_], weights_extra: FloatArray | None,
) -> None:
    """Take ``newly`` out of the unfrozen set: their weighted demand leaves ``load``; with
    ``weights_extra`` (frozen at a cap above the current level) the capacity their growth
    from the level to the cap uses leaves ``remaining``."""
    active[newly] = False
    lens = csc.indptr[newly + 1] - csc.indptr[newly]
    pos = _spans(csc.indptr, newly)
    rows = csc.indices[pos]
    wd = csc.data[pos] * np.repeat(w[newly], lens)
    load -= np.bincount(rows, weights=wd, minlength=n_res)
    if weights_extra is not None:
        remaining -= np.bincount(rows, weights=wd * np.repeat(weights_extra, lens), minlength=n_res)
        np.maximum(remaining, 0.0, out=remaining)
    count -= np.bincount(rows, minlength=n_res)
    empty = count == 0
    load[empty] = 0.0
    open_res &= ~empty


def _spans(indptr: npt.NDArray[Any], sel: IntArray) -> IntArray:
    """Positions ``indptr[s] .. indptr[s + 1] - 1`` of every ``s`` in ``sel``, concatenated."""
    starts = indptr[sel]
    lens = indptr[sel + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, dtype=np.intp)
    first = np.cumsum(lens) - lens  # where each span begins in the output
    return np.asarray(np.arange(total) + np.repeat(starts - first, lens), dtype=np.intp)


def _as_csr(demand: Any) -> sp.csr_matrix:
    """``demand`` as a float64 CSR matrix without explicit zeros, after checking its entries."""
    if sp.issparse(demand):
        csr = sp.csr_matrix(demand, dtype=np.float64, copy=True)
        csr.sum_duplicates()
        values = csr.data
    else:
        try:
            dense = np.asarray(demand, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError("demand", type(demand).__name__, "a 2-D array of numbers") from exc
        if dense.ndim != 2:
            raise ConfigError("demand.shape", dense.shape, "a 2-D (resources, flows) matrix")
        values = dense.ravel()
    bad = ~np.isfinite(values) | (values < 0)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        if sp.issparse(demand):
            r, f = int(np.searchsorted(csr.indptr, i, side="right") - 1), int(csr.indices[i])
        else:
            r, f = divmod(i, dense.shape[1])
        raise ConfigError(f"demand[{r}, {f}]", float(values[i]), "a finite number >= 0")
    if not sp.issparse(demand):
        csr = sp.csr_matrix(dense)
    csr.eliminate_zeros()
    return csr


def _vector(field: str, value: npt.ArrayLike, n: int, what: str, *, allow_inf: bool) -> FloatArray:
    """``value`` as a float64 vector of ``n`` entries ``>= 0`` (``inf`` only if allowed)."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, value, f"a 1-D array of {n} numbers") from exc
    if arr.shape != (n,):
        raise ConfigError(f"{field}.shape", arr.shape, f"({n},): one entry per {what}")
    ok = (arr >= 0) & (np.isfinite(arr) | (allow_inf & (arr == np.inf)))
    if not np.all(ok):
        i = int(np.flatnonzero(~ok)[0])
        allowed = "a number >= 0 or inf" if allow_inf else "a finite number >= 0"
        raise ConfigError(f"{field}[{i}]", float(arr[i]), allowed)
    return arr
