"""Writing a file so that it is either complete or not there: what the CLI and `pillow_selic.save` use."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


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
