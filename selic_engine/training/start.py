"""How a training run's model starts: resume a checkpoint, or begin from weights (adapt them to a new text
embedder, widen them to a wider preset, or continue them), or from a fresh initialisation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig, TrainConfig, preset
from ..model import Architecture, build_model
from ..weights import shipped_weights_path
from ..weights.files import load_weights, read_metadata
from . import checkpoint
from .widen import widen, widenable


@dataclass
class Start:
    """Where a run begins: the model, the checkpoint it resumes (None otherwise), and the steps and training
    seconds already behind it (they count across sessions)."""

    model: Architecture
    checkpoint: dict[str, Any] | None
    step: int
    train_seconds: float


def with_shipped_weights(cfg: TrainConfig, last: Path) -> TrainConfig:
    """--resume auto with no checkpoint yet and no --init-weights: start from the preset's shipped weights
    (recorded as init_weights in the run's log and checkpoints)."""
    shipped = shipped_weights_path(preset(cfg.preset).name)
    if cfg.resume == "auto" and not last.exists() and not cfg.init_weights and shipped.exists():
        return dataclasses.replace(cfg, init_weights=str(shipped))
    return cfg


def start(cfg: TrainConfig, text_dim: int, last: Path) -> Start:
    """The model a run begins with, for caption vectors of text_dim; last is the run's own checkpoint, which
    --resume auto resumes when it exists."""
    resume = _checkpoint_to_resume(cfg, last)
    state = checkpoint.load(resume) if resume else None
    trained = load_weights(Path(cfg.init_weights))[0] if state is None and cfg.init_weights else None
    model_cfg = preset(cfg.preset)
    if cfg.adapter:
        model_cfg = adapter_config(state, trained, text_dim)
    model = build_model(model_cfg)  # built even when widening replaces it: its initialisation draws from the RNG
    if state is not None:
        if ModelConfig.from_json(state["config"]) != model_cfg:
            raise ValueError(f"checkpoint {resume} was trained with another model config")
        model.load_state_dict(state["model"])
    elif trained is not None:
        model = _from_weights(model, trained, cfg)
    if model_cfg.text_dim != text_dim:
        raise ValueError(f"embedder gives {text_dim}-d vectors, model expects {model_cfg.text_dim}; "
                         "train an encoder adapter for it with --adapter")
    if state is not None:
        return Start(model, state, int(state["step"]), float(state.get("train_seconds", 0)))
    # Exported weights record the step they reached; an adapter starts its own count.
    history = read_metadata(Path(cfg.init_weights)) if trained is not None and not cfg.adapter else {}
    return Start(model, None, int(history.get("step", 0)), float(history.get("train_seconds", 0)))


def _checkpoint_to_resume(cfg: TrainConfig, last: Path) -> Path | None:
    """--resume auto: the run's own checkpoint when there is one; else the checkpoint named, if any."""
    if cfg.resume == "auto":
        return last if last.exists() else None
    return Path(cfg.resume) if cfg.resume else None


def _from_weights(fresh: Architecture, trained: Architecture, cfg: TrainConfig) -> Architecture:
    """--init-weights: adapt them (--adapter), widen them (a wider preset of the same layout starts from what
    the narrower one learned) or continue them; any other config is refused."""
    if cfg.adapter:
        load_for_adapter(fresh, trained.state_dict())
        return fresh
    if trained.config == fresh.config:
        fresh.load_state_dict(trained.state_dict())
        return fresh
    if widenable(trained.config, fresh.config):
        return widen(trained, fresh.config, cfg.seed)
    raise ValueError(f"{cfg.init_weights} holds config {trained.config.name!r}, not preset {cfg.preset!r}")


def adapter_config(state: dict | None, init: Architecture | None, text_dim: int) -> ModelConfig:
    """--adapter: the config of the model being adapted, with the new embedder's text dimension.

    Only the encoder side (fusion included) depends on text_dim, so the decoder and the model id do not change.
    """
    if state is not None:
        return ModelConfig.from_json(state["config"]).replace(text_dim=text_dim)
    if init is None:
        raise ValueError("--adapter adapts a trained model: pass --init-weights MODEL.safetensors (or --resume)")
    return init.config.replace(text_dim=text_dim)


def load_for_adapter(model: Architecture, state: dict[str, torch.Tensor]) -> None:
    """Load trained weights into a model whose text dimension may differ: the fusion tensors shaped by it start
    fresh; any other mismatch still raises (entropy tables are resized by compressai's load_state_dict)."""
    own = model.state_dict()
    fresh = {k for k, v in state.items() if k.startswith("fusion.") and k in own and own[k].shape != v.shape}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    if set(result.missing_keys) != fresh or result.unexpected_keys:
        raise ValueError(f"weights do not match the model: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")
