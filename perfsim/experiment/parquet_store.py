"""The on-disk dataset of a sweep: one Parquet file per finished point, written atomically.

Layout under the sweep's output directory::

    points/<point_id>.parquet        a point that ran (its rows)
    points/<point_id>.error.parquet  a point that raised (one row, with its ``error`` message)
    .lock                            held (flock) by the perfsim process running the sweep

A file is written under a temporary name in the same directory and moved into place with
``os.replace`` (:func:`perfsim.experiment.output.write_atomic`), so whatever stops the writer —
Ctrl-C, SIGTERM, SIGKILL, a power cut after the rename reached the disk — the directory holds
only whole point files, plus at worst a ``.*.tmp`` file that the next run deletes.  Whether a
point is done, and whether it failed, is read from the file names alone: resuming a sweep of
any size lists one directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import pandas as pd

from perfsim.errors import PerfsimError
from perfsim.experiment.output import write_atomic

OK_SUFFIX = ".parquet"
ERROR_SUFFIX = ".error.parquet"


class PointStore:
    """The ``points/`` dataset of one sweep output directory."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / "points"
        self._lock: IO[str] | None = None

    # --- the lock: one perfsim process per output directory ------------------------------

    def lock(self) -> None:
        """Take the directory's lock; raises PerfsimError when another sweep holds it.  The
        kernel releases it when the process ends, however it ends."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.out_dir / ".lock", "w")  # noqa: SIM115 - held until unlock()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise PerfsimError(f"--out {self.out_dir}: another perfsim sweep is writing there") from None
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # --- state ----------------------------------------------------------------------------

    def status(self) -> dict[str, bool]:
        """point_id -> True if it ran, False if it raised (a point with both files ran)."""
        out: dict[str, bool] = {}
        if not self.dir.is_dir():
            return out
        for entry in os.scandir(self.dir):
            name = entry.name
            if name.startswith("."):
                continue
            if name.endswith(ERROR_SUFFIX):
                out.setdefault(name[: -len(ERROR_SUFFIX)], False)
            elif name.endswith(OK_SUFFIX):
                out[name[: -len(OK_SUFFIX)]] = True
        return out

    def remove_temporary(self) -> int:
        """Delete the temporary files a killed writer left behind; returns how many."""
        n = 0
        if self.dir.is_dir():
            for entry in os.scandir(self.dir):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    Path(entry.path).unlink(missing_ok=True)
                    n += 1
        return n

    def clear(self) -> None:
        """Delete every point of the dataset (``--restart``)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- points ---------------------------------------------------------------------------

    def path(self, point_id: str, error: bool) -> Path:
        return self.dir / f"{point_id}{ERROR_SUFFIX if error else OK_SUFFIX}"

    def write(self, point_id: str, frame: pd.DataFrame, error: bool) -> Path:
        """Write one point's rows atomically.  A point that ran replaces its earlier error file
        (removed after the new file is in place, so the point is never missing)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = write_atomic(self.path(point_id, error), lambda p: frame.to_parquet(p, index=False))
        if not error:
            self.path(point_id, True).unlink(missing_ok=True)
        return path

    def read(self, point_ids: Iterable[str]) -> list[pd.DataFrame]:
        """The frames of ``point_ids`` (each the file that ran, else its error file), in order;
        points without a file are skipped."""
        status = self.status()
        return [pd.read_parquet(self.path(pid, not status[pid])) for pid in point_ids if pid in status]
