"""Warnings that point at the caller's own line of code, past the selic, Pillow and imageio frames between."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import warnings

# Frames in these packages are not "the caller": a warning points at the first line outside them.
_INTERNAL_PACKAGES = ("selic_engine", "pillow_selic", "PIL", "imageio")


@functools.cache
def _internal_dirs() -> tuple[str, ...]:
    found = (importlib.util.find_spec(name) for name in _INTERNAL_PACKAGES)
    return tuple(os.path.join(d, "") for spec in found if spec and spec.submodule_search_locations
                 for d in spec.submodule_search_locations)


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn at the first frame outside selic, Pillow and imageio: the user's own line, however many
    layers (Image.save, imageio, rate control) lie between, so the warning says where to fix it."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_internal_dirs()):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
