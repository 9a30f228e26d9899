"""Files that survive a kill, a full disk or a power cut: write beside, fsync, rename, fsync the
folder. A leaf every part of aiayn may import.

A rename is atomic, but not durable by itself: after a power cut the new name may point at a
file whose bytes never reached the disk. So the bytes are flushed (`fsync`) before the rename,
and the folder holding the name after it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: new files get the modes `open` would give them


def fsync_file(path: str | Path) -> None:
    """Flush a written file's bytes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to the disk.

    A no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_durably(src: str | Path, dst: str | Path) -> None:
    """`os.replace(src, dst)`, then fsync the folder(s) that changed."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)
    if Path(src).parent != Path(dst).parent:
        fsync_dir(Path(src).parent)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (text as UTF-8) to `path` so that `path` holds either its old content or all
    of `data`, never part of it, whatever stops the process.

    Raises:
        OSError: The write failed (a full disk: ENOSPC); `path` is untouched and no temporary
            file is left.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        rename_durably(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
