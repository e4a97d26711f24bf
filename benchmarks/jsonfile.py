"""JSON files that a killed process cannot leave half-written.

A benchmark writes its results after every step, and on a GPU window any step may be the last:
the run is cut by a time limit (``benchmarks/gpu_session.py``) or killed. Each write goes to a
temporary file beside the target, which is then renamed over it (a rename within one folder is
atomic on POSIX), so a reader finds the old content or the new, never a prefix of it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

LEFTOVER = ".tmp"  # suffix of a temporary file that a kill left behind


def write(path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=LEFTOVER, dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would survive the rename
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read(path, default=None):
    """The file's content, or ``default`` when there is no file."""
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def update(path, change: Callable[[dict], None]) -> dict:
    """Read the object in ``path`` (``{}`` if none), let ``change`` edit it in place, write it back."""
    data = read(path, {})
    change(data)
    write(path, data)
    return data


def remove_leftovers(folder) -> None:
    """Delete the temporary files of writes that a kill interrupted."""
    for leftover in Path(folder).glob(f"*{LEFTOVER}"):
        leftover.unlink()
