"""Writing a file whole or not at all: the one way prof writes what it keeps (session files,
exports, reports, calibrations, probe artifacts). The data goes to a hidden temporary name in
the target's directory and is renamed over the target, so a run interrupted at any point
leaves the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

FILE_MODE = 0o644  # mkstemp creates 0600; what prof writes is an ordinary file


@contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed to ``path`` when the block ends
    without an exception, removed otherwise. ``suffix`` keeps a tool's file-type check happy
    (``np.savez`` appends ``.npz`` to a name without it)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix,
                                dir=directory)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: Path | str) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` whole when the block ends."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())
