"""selic_engine: the SELIC learned image codec (model, entropy coding, container, engine).

Attributes load lazily (PEP 562) so that `import pillow_selic` and header-only work never
import torch; the first encode/decode does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_QUALITY": "config",
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
    "decode": "engine",
    "encode": "engine",
    "get_engine": "engine",
    "probe": "engine",
    "register_model": "engine",
    "select_device": "engine",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .config import DEFAULT_QUALITY, PRESETS, ModelConfig, preset  # noqa: F401
    from .container import Header, SelicFormatError, UnsupportedVersionError  # noqa: F401
    from .engine import decode, encode, get_engine, probe, register_model, select_device  # noqa: F401
    from .errors import (  # noqa: F401
        DesyncError,
        ImageTooLargeError,
        UnknownModelError,
        WeightsNotFoundError,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
