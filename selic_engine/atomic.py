"""Writing a file so that it is either complete or not there: what the CLI, `pillow_selic` and imageio use."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """write(tmp) to a temporary file beside `path`, then rename it over `path`.

    Any failure, Ctrl-C included, leaves `path` as it was (absent, or its previous content) and no
    temporary behind; the rename is atomic on one file system.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _position(fp: IO[bytes]) -> int | None:
    try:
        return fp.tell()
    except (AttributeError, OSError, ValueError):  # a pipe, or an object without tell
        return None


def _flush(fp: IO[bytes]) -> None:
    flush = getattr(fp, "flush", None)
    if flush is not None:
        flush()


def write_whole(fp: IO[bytes], data: bytes) -> None:
    """Write data at fp's position, whole or not at all, into a file someone else opened (Image.save's target,
    a caller's file object): on any failure, a full disk or Ctrl-C, the bytes written are cut off again (where
    the file can seek; a pipe cannot) and the error goes on.

    A buffered file (what open() and Image.save(path) give) gets the bytes through its raw file: a tail left in
    its buffer would be written, or fail half-written, by a later close(), out of reach of this clean-up.
    """
    start = _position(fp)
    try:
        _flush(fp)  # what the caller wrote before stays in front of ours
        if isinstance(fp, io.BufferedWriter | io.BufferedRandom):
            view = memoryview(data)
            while view:
                n = fp.raw.write(view)
                if n is None:
                    raise BlockingIOError(errno.EAGAIN, "the file is non-blocking and cannot take more now")
                view = view[n:]
            if start is not None:
                fp.seek(start + len(data))  # the buffered file's own idea of its position, after the raw writes
        else:
            fp.write(data)
            _flush(fp)
    except BaseException:
        if start is not None:
            with contextlib.suppress(OSError, ValueError):
                fp.seek(start)
                fp.truncate()
        raise
