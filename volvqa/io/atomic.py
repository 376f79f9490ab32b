"""Atomic file writes: a reader sees the old file or the new one, never half."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; move it onto ``dest`` on success.

    On an exception the temporary file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent or ".")
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


@contextlib.contextmanager
def owned_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Create ``path`` (and missing parents) for a command's outputs; if the
    command fails or is interrupted, remove what this call created while it
    holds nothing, so a failed run leaves no empty ``out/NAME`` behind."""
    path = Path(path)
    made = []
    p = path
    while not p.exists():
        made.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if made and not any(f.is_file() for f in made[-1].rglob("*")):
            import shutil
            shutil.rmtree(made[-1], ignore_errors=True)   # the folders we made, holding no file
        raise


def link_or_copy_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """``dest`` becomes ``src``'s bytes at once: a hard link when the file system allows it (no
    second copy of a large CT), else a copy; either way through a temporary name and a rename."""
    import shutil
    import uuid
    dest = Path(dest)
    # A name of its own (two exporters of one folder never share one), removed on any failure.
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        # rename(2) does nothing when both names are links to one file (dest already was src).
        tmp.unlink(missing_ok=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
