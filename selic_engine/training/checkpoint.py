"""Full training checkpoints (model, optimizers, step, RNG), written atomically, loaded without pickles of code;
and the trained model inside one, for `selic export`."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, preset
from ..model import Architecture, build_model
from ..semantic import training_embedder
from ..weights.files import read_metadata
from .averaging import averaged_weights


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


def trained_model(path: Path, preset_name: str | None = None, raw: bool = False) -> tuple[Architecture, dict[str, str]]:
    """The model a checkpoint trained, and the history its exported weights record (step, training seconds,
    whether averaged, the text embedder it was trained with), so that training from those weights counts on and
    encoding knows what its text vectors mean; refuses a config other than preset_name's.

    The weight average is the model when the checkpoint has one (raw=True: the last step's weights).
    """
    state = load(path)
    cfg = preset(preset_name) if preset_name else None
    ckpt_cfg = ModelConfig.from_json(state["config"])
    if cfg is not None and cfg != ckpt_cfg:
        raise ValueError(f"checkpoint config {ckpt_cfg.name!r} does not match preset {cfg.name!r}")
    model = build_model(ckpt_cfg)
    model.load_state_dict(state["model"])
    averaged = "ema" in state and not raw
    if averaged:
        model.load_state_dict(averaged_weights(state["ema"]))
    steps, seconds = int(state["step"]), float(state.get("train_seconds", 0))
    history = {"averaged": str(averaged).lower()}
    if "train_config" in state:
        train_cfg = json.loads(state["train_config"])
        # what the encoder's text vectors mean: the engine warns when another answers
        history["embedder"] = training_embedder(train_cfg["embedder"])[0]
        if train_cfg.get("adapter"):
            history["adapter_step"] = str(steps)
            steps, seconds = _add_base_history(steps, seconds, Path(train_cfg["init_weights"]))
    history |= {"step": str(steps), "train_seconds": f"{seconds:.0f}"}
    return model, history


def _add_base_history(steps: int, seconds: float, base: Path) -> tuple[int, float]:
    """An adapter run counts its own steps from 0, but its weights carry the whole training behind them: the
    adapted weights' steps and seconds come first (so that training on from the export counts on)."""
    if not base.exists():
        raise FileNotFoundError(f"{base}: the weights this adapter run started from are needed to record the "
                                "training behind the export (their step and train_seconds)")
    meta = read_metadata(base)
    return int(meta.get("step", 0)) + steps, float(meta.get("train_seconds", 0)) + seconds
