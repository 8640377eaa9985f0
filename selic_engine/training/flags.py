"""Command-line flags of the training stages, from their config dataclasses' fields and defaults."""

from __future__ import annotations

import argparse
from typing import get_args

from ..config import Precision, StageConfig


def int_tuple(text: str) -> tuple[int, ...]:
    """"192,128,64,32" -> (192, 128, 64, 32): the list flags (widths, channel groups)."""
    return tuple(int(w) for w in text.split(",") if w)


def add_flags(parser: argparse.ArgumentParser, config: type, kinds: dict[str, type]) -> None:
    """--name-with-dashes for each field name -> type in kinds, defaulting to config's class attribute."""
    for name, kind in kinds.items():
        default = getattr(config, name)
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=f"(default {default!r})")


def add_stage_flags(parser: argparse.ArgumentParser, config: type[StageConfig]) -> None:
    """The flags of config.StageConfig's fields (every stage's), with config's defaults."""
    parser.add_argument("--out", required=True, help="run folder: log.jsonl and last.pt")
    parser.add_argument("--resume", choices=("", "auto"), default="", help="auto: continue from OUT/last.pt if present")
    parser.add_argument("--precision", choices=get_args(Precision), default=config.precision)
    add_flags(parser, config, {"data": str, "steps": int, "batch_size": int, "crop": int, "lr": float,
                               "clip_grad": float, "ema_decay": float, "val_every": int, "val_images": int,
                               "ckpt_every": int, "threads": int, "seed": int, "minutes": float})
