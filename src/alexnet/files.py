"""Atomic file writes (a crash leaves the old file or the new one, never half of one), and
file names made printable."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import AlexNetError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def printable(path: str | os.PathLike) -> str:
    """A file name as text that can be printed and stored in JSON: names that are not valid
    UTF-8 (common in data copied from other systems) keep their odd bytes as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def sha256_of(path: str | Path) -> str:
    """The file's SHA-256, hex, read in pieces (weights files run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def output_folder(path: str | Path, flag: str = "--out", create: bool = False) -> Path:
    """``path`` checked as a folder to write into, before any work is done (and made, with
    ``create``): a file in its place, or a folder that cannot be made or written, is a one-line
    error. Without ``create`` nothing is made, so a later error leaves nothing behind."""
    path = Path(path)
    try:
        if path.is_symlink() and not path.exists():
            raise AlexNetError(f"{flag} {printable(path)} is a link to nothing; give a folder")
        if path.exists() and not path.is_dir():
            raise AlexNetError(f"{flag} {printable(path)} is a file; give a folder")
        if create:
            path.mkdir(parents=True, exist_ok=True)
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    except OSError as e:  # a parent that cannot be entered, a disk that refuses
        raise AlexNetError(f"{flag} {printable(path)}: cannot reach or make it ({e.strerror or e})") from None
    if not existing.is_dir():
        raise AlexNetError(f"{flag} {printable(path)}: {printable(existing)} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AlexNetError(f"{flag} {printable(path)}: {printable(existing)} is not writable")
    return path


def output_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` checked as a file to write, before any work is done: a folder in its place, or
    a parent folder that cannot be made or written, is a one-line error."""
    path = Path(path)
    try:
        is_dir = path.is_dir()
    except OSError as e:
        raise AlexNetError(f"{flag} {printable(path)}: cannot reach it ({e.strerror or e})") from None
    if is_dir:
        raise AlexNetError(f"{flag} {printable(path)} is a folder; give a file name")
    output_folder(path.parent, flag=f"{flag}'s folder")
    return path
