"""selic_engine: the SELIC learned image codec (model, entropy coding, container, engine).

Attributes load lazily (PEP 562) so that `import pillow_selic` and header-only work never
import torch; the first encode/decode does.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# OpenMP threads that spin while they wait hold a core that another process needs: with one other busy process a
# 2-thread decode ran 2.3-2.7x slower than idle under torch's default (active) wait policy and 1.4-1.7x with
# PASSIVE, which costs nothing idle (measured, see benchmarks/speed). libgomp reads the policy once, when torch
# loads, so this applies only where selic is imported before torch, and never overrides the caller's setting.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _one_thread_after_fork() -> None:
    """torch at one thread in a child made by fork (multiprocessing's default on Linux, DataLoader workers,
    gunicorn). GNU OpenMP's thread pool does not survive fork: a child of a parent that has run a parallel
    region (any 2-thread decode) hangs for ever in its first convolution, unless it stays at one thread, which
    never enters the pool. Workers of a pool are parallel already; spawned children start fresh and keep
    torch's default."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_one_thread_after_fork)

_EXPORTS = {
    "DEFAULT_QUALITY": "config",
    "SaveOptions": "saving",
    "PRESETS": "config",
    "ModelConfig": "config",
    "preset": "config",
    "Header": "container",
    "SelicFormatError": "container",
    "UnsupportedVersionError": "container",
    "DesyncError": "errors",
    "ImageTooLargeError": "errors",
    "UnknownModelError": "errors",
    "WeightsNotFoundError": "errors",
    "decode": "decoding",
    "encode": "saving",
    "get_engine": "engine",
    "probe": "decoding",
    "register_model": "engine",
    "select_device": "engine",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .config import DEFAULT_QUALITY, PRESETS, ModelConfig, preset  # noqa: F401
    from .container import Header, SelicFormatError, UnsupportedVersionError  # noqa: F401
    from .decoding import decode, probe  # noqa: F401
    from .engine import get_engine, register_model, select_device  # noqa: F401
    from .errors import (  # noqa: F401
        DesyncError,
        ImageTooLargeError,
        UnknownModelError,
        WeightsNotFoundError,
    )
    from .saving import SaveOptions, encode  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
