"""Writing result files atomically: a reader never sees a half-written file.

Each file is written to a temporary name in the same directory and moved into place with
``os.replace`` (atomic on POSIX), so an interrupted run leaves either the old file or the new
one, never a truncated one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_frame(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` as CSV or Parquet (by the file's suffix), atomically."""
    if path.suffix == ".parquet":
        return write_atomic(path, lambda p: df.to_parquet(p, index=False))
    return write_atomic(path, lambda p: df.to_csv(p, index=False))
