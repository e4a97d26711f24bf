"""Which code a run measured: the commit, and a fingerprint of the source.

The GPU machine runs on a copy of the working tree that need not be a git checkout, so the
commit comes from the first of: ``git rev-parse`` in the tree (``+dirty`` when kernels/ or
cnn/ differ from it), the ``KERNELS_COMMIT`` environment variable (``gpu_session.sh print``
writes the command line that sets it), else ``unknown``. Every run also records
``source_fingerprint``: a SHA-256 of the package's own source files (paths and contents), which
the same function computes for any commit from git's objects, so that a result whose commit is
unknown can be matched to the commit it ran (``find_commit``; ``gpu_session merge`` does it).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("kernels", "cnn", "benchmarks")
SOURCE_SUFFIXES = (".py", ".json")
NOT_SOURCE = ("benchmarks/results/",)
COMMIT_VARIABLE = "KERNELS_COMMIT"


def is_source(path: str) -> bool:
    """Whether ``path`` (relative, with /) is one of the files the fingerprint covers."""
    parts = path.split("/")
    return (parts[0] in SOURCE_FOLDERS and path.endswith(SOURCE_SUFFIXES) and "__pycache__" not in parts
            and not path.startswith(NOT_SOURCE))


def fingerprint(files: Iterable[Tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for path, content in sorted(files):
        digest.update(f"{path}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    return digest.hexdigest()[:16]


def tree_fingerprint(root: Path = REPO) -> str:
    """The fingerprint of the source files as they are in the folder ``root``."""
    root = Path(root)
    files = []
    for folder in SOURCE_FOLDERS:
        for path in (root / folder).rglob("*"):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and is_source(relative):
                files.append((relative, path.read_bytes()))
    return fingerprint(files)


def _git(root: Path, *args: str, data: Optional[bytes] = None) -> Optional[bytes]:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], input=data, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def commit_fingerprint(rev: str, root: Path = REPO) -> Optional[str]:
    """The fingerprint of the source files of commit ``rev``, read from git's objects."""
    listing = _git(root, "ls-tree", "-r", "-z", rev, "--", *SOURCE_FOLDERS)
    if listing is None:
        return None
    entries = []  # (path, blob id)
    for entry in listing.split(b"\0"):
        if entry:
            meta, path = entry.split(b"\t", 1)
            mode, kind, blob = meta.split()
            if kind == b"blob" and is_source(path.decode()):
                entries.append((path.decode(), blob))
    output = _git(root, "cat-file", "--batch", data=b"".join(blob + b"\n" for _, blob in entries))
    if output is None:
        return None
    files, offset = [], 0
    for path, _ in entries:
        header_end = output.index(b"\n", offset)
        size = int(output[offset:header_end].split()[2])
        files.append((path, output[header_end + 1:header_end + 1 + size]))
        offset = header_end + 1 + size + 1
    return fingerprint(files)


def git_commit(root: Path = REPO) -> Optional[str]:
    """HEAD's short hash, ``+dirty`` when kernels/ or cnn/ have changes; None without git."""
    head = _git(root, "rev-parse", "--short", "HEAD")
    if not head:
        return None
    commit = head.decode().strip()
    if _git(root, "status", "--porcelain", "--untracked-files=no", "--", "kernels", "cnn"):
        commit += "+dirty"
    return commit


def commit(root: Path = REPO) -> Tuple[str, str]:
    """(commit, where it came from: ``git``, ``KERNELS_COMMIT`` or ``none``)."""
    found = git_commit(root)
    if found:
        return found, "git"
    if os.environ.get(COMMIT_VARIABLE):
        return os.environ[COMMIT_VARIABLE], COMMIT_VARIABLE
    return "unknown", "none"


def find_commit(wanted: str, root: Path = REPO, limit: int = 200) -> Optional[str]:
    """The newest of the last ``limit`` commits of HEAD whose source has the fingerprint ``wanted``."""
    revs: List[str] = (_git(root, "rev-list", f"--max-count={limit}", "HEAD") or b"").decode().split()
    return next((rev[:7] for rev in revs if commit_fingerprint(rev, root) == wanted), None)
