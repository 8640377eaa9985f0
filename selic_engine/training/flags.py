"""Command-line flags of the training stages, from their config dataclasses' fields and defaults."""

from __future__ import annotations

import argparse


def int_tuple(text: str) -> tuple[int, ...]:
    """"192,128,64,32" -> (192, 128, 64, 32): the list flags (widths, channel groups)."""
    return tuple(int(w) for w in text.split(",") if w)


def add_flags(parser: argparse.ArgumentParser, config: type, kinds: dict[str, type]) -> None:
    """--name-with-dashes for each field name -> type in kinds, defaulting to config's class attribute."""
    for name, kind in kinds.items():
        default = getattr(config, name)
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=f"(default {default!r})")
