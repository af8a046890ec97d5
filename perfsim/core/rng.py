"""Per-component random streams.

One root seed per run feeds :class:`numpy.random.SeedSequence`; each component asks for its
own stream by a stable scope name.  The key is ``crc32(scope)`` (never Python's salted
``hash``), so adding a component does not shift the numbers any other component draws.
Nothing in perfsim touches the global ``random`` or ``numpy.random`` state.
"""

from __future__ import annotations

import zlib

import numpy as np


class RngStreams:
    """Factory of independent, reproducible :class:`numpy.random.Generator` streams."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def stream(self, scope: str) -> np.random.Generator:
        """The generator of ``scope``; the same object on every call with the same scope."""
        gen = self._streams.get(scope)
        if gen is None:
            seq = np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(scope.encode()),))
            gen = np.random.Generator(np.random.PCG64(seq))
            self._streams[scope] = gen
        return gen


class ExpSampler:
    """Exponential inter-arrival times drawn in blocks, so the hot path pays no numpy call.

    ``mean_s`` is the mean; ``next()`` returns one sample in seconds.
    """

    __slots__ = ("_block", "_buf", "_gen", "_i", "_mean_s")

    def __init__(self, gen: np.random.Generator, mean_s: float, block: int = 4096) -> None:
        self._gen = gen
        self._mean_s = mean_s
        self._block = block
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._gen.exponential(self._mean_s, self._block).tolist()
            self._i = 0
        x = self._buf[self._i]
        self._i += 1
        return x


class ShapeSampler:
    """Samples ``mean_s × a`` with ``a`` drawn uniformly from ``shape`` (equal-probability atoms
    of a measured distribution, normalised to mean 1), in blocks like :class:`ExpSampler`.

    The long-run mean is ``mean_s``; the spread and skew are the measured distribution's.
    """

    __slots__ = ("_atoms", "_block", "_buf", "_gen", "_i")

    def __init__(self, gen: np.random.Generator, mean_s: float, shape: tuple[float, ...], block: int = 1024) -> None:
        self._gen = gen
        self._atoms = np.asarray(shape, dtype=float) * mean_s
        self._block = block
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._atoms[self._gen.integers(0, len(self._atoms), self._block)].tolist()
            self._i = 0
        x = self._buf[self._i]
        self._i += 1
        return x
