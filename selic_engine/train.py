"""`python -m selic_engine.train` / `selic train`: train, resume or adapt a SELIC model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path

from .config import TrainConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="selic train",
        description="Train a SELIC model on a folder of photos with captions.tsv. "
        "Flags override the fields of --config (a JSON file of TrainConfig fields).",
    )
    p.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=f"(default {f.default})")
        elif typing.get_origin(kind) is typing.Literal:
            p.add_argument(flag, choices=typing.get_args(kind), default=None, help=f"(default {f.default!r})")
        else:
            p.add_argument(flag, type=kind, default=None, help=f"(default {f.default!r})")
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    args = parser().parse_args(argv)
    values = json.loads(args.config.read_text()) if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> None:
    from .training.loop import train

    print(train(config_from_args(argv)))


if __name__ == "__main__":
    main()
