"""Full training checkpoints (model, optimizers, step, RNG), written atomically, loaded without pickles of code."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def save(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file, fsync, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    """weights_only=True: tensors and plain containers only, no arbitrary unpickling."""
    return torch.load(path, map_location="cpu", weights_only=True)
