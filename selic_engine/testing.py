"""Helpers for tests and experiments: a tiny random SELIC model and synthetic photo-like images.

A tiny model codes a small image in well under a second, so round trips, fuzzing and tiling
can be exercised without the shipped weights (register it with selic_engine.register_model).
"""

from __future__ import annotations

import numpy as np
import torch

from .config import ModelConfig
from .model import Architecture, build_model

#: The tiny architecture: the shipped graph at a fraction of its width (any image size, every quality).
TINY = dict(name="tiny", N=16, M=32, Nz=16, slices=2, charm_hidden=16, text_dim=384)


def build_tiny(seed: int = 0, **changes: object) -> Architecture:
    """A tiny randomly initialised model, ready to code; `changes` override fields of TINY (e.g. fusion="add").

    Its gains are raised so that the random latent quantizes to many distinct symbols, which is what
    exercises the entropy coder.
    """
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**{**TINY, **changes}))  # type: ignore[arg-type]
    with torch.no_grad():
        model.gains.log_gain += 4.0
        model.gains.log_inv_gain -= 4.0
    model.update(force=True)
    return model.eval()


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An (h, w, 3) uint8 image with smooth gradients, edges and some texture: what a codec sees in a photo.

    Built in row blocks, so a 24 MP image costs little more than its own 72 MB.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((h, w, 3), np.uint8)
    xx = np.arange(w, dtype=np.float32)[None, :]
    for top in range(0, h, 256):
        yy = np.arange(top, min(top + 256, h), dtype=np.float32)[:, None]
        r = 128 + 90 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
        g = 128 + 90 * np.cos((xx + yy) / 71.0)
        b = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2, 210.0, 50.0)
        block = np.stack(np.broadcast_arrays(r, g, b), -1) + rng.normal(0, 6, (len(yy), w, 3)).astype(np.float32)
        out[top : top + len(yy)] = block.clip(0, 255)
    return out
