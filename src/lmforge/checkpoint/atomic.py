"""Atomic writes: a reader sees the old file/folder or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError


def write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    path = Path(path)
    created = _make_parents(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _remove_empty(created)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `path` in one rename
    (an existing `path` is moved aside first and removed after). On any error, or Ctrl-C,
    the temporary folder is removed and `path` is untouched."""
    path = Path(path).absolute()
    if path.exists() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise ConfigError(f"{path} is the current folder (or holds it), which cannot be replaced; "
                          "write into a new subfolder instead")
    created = _make_parents(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise _at_destination(error, tmp, path) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def _at_destination(error: OSError, tmp: Path, path: Path) -> OSError:
    """The error with the temporary folder's name replaced by the destination's (what the user named)."""
    name = str(error.filename) if error.filename is not None else ""
    if not name.startswith(str(tmp)):
        return error
    return type(error)(error.errno, error.strerror, str(path) + name[len(str(tmp)):])


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the folders created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))

    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Undo `_make_parents` after a failure: remove the folders it created (deepest first) if still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
