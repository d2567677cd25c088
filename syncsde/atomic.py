"""Atomic file outputs: every file the package writes appears complete under its final name or not
at all.

Each writer writes to a temporary file in the destination folder (same file system, so the final
``os.replace`` is atomic), flushes and fsyncs it, then renames it into place. An interruption
(Ctrl-C, SIGKILL, a full disk) leaves either the previous file or nothing, never a truncated one;
the temporary file is removed on any Python-level failure.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_save_png", "atomic_savefig", "atomic_save_npy", "check_output_dir"]


def check_output_dir(folder: str | os.PathLike, what: str = "--out") -> Path:
    """Creates ``folder`` (and parents) and checks that files can be created in it. Raises
    ``ValueError`` naming ``what`` when a parent is a file or the folder is not writable."""
    p = Path(folder)
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{what} {str(folder)!r}: {str(parent)!r} is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{what} {str(folder)!r}: cannot create the folder ({e.strerror})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(folder)!r}: the folder is not writable")
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yields a temporary path next to ``path``; on normal exit it is fsynced and renamed to
    ``path``, on an exception it is deleted. ``suffix`` (default: ``path``'s own) keeps writers
    that pick a format from the extension (PIL, matplotlib, numpy) working."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode a plain open() would have
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask can only be read by setting it


def _umask() -> int:
    return _UMASK


def _write_with(path: str | os.PathLike, writer: Callable[[str], Any]) -> str:
    with atomic_path(path) as tmp:
        writer(tmp)
    return str(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    return _write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **kwargs: Any) -> str:
    kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **kwargs) + "\n")


def atomic_save_png(image: Any, path: str | os.PathLike, **save_kwargs: Any) -> str:
    """``image.save`` (PIL) through a temporary file; the format follows ``path``'s extension."""
    fmt = save_kwargs.pop("format", None) or Path(path).suffix.lstrip(".").upper() or "PNG"
    fmt = {"JPG": "JPEG"}.get(fmt, fmt)
    return _write_with(path, lambda tmp: image.save(tmp, format=fmt, **save_kwargs))


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """``fig.savefig`` (matplotlib) through a temporary file."""
    kwargs.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    return _write_with(path, lambda tmp: fig.savefig(tmp, **kwargs))


def atomic_save_npy(path: str | os.PathLike, array: Any) -> str:
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)

    return _write_with(path, write)
