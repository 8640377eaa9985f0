"""The engine caches: bounded for loaded weights, and registering a model leaves the caller's model alone."""

from __future__ import annotations

import numpy as np
import torch

import selic_engine as se
from selic_engine import engine
from selic_engine.testing import build_tiny
from selic_engine.weights.files import save_weights


def test_register_model_leaves_the_callers_model_as_it_was():
    """register_model used to move the caller's model into coding layout in place (float64 prior, eval mode)."""
    model = build_tiny(seed=5).train()
    before = {k: (v.dtype, v.clone()) for k, v in model.state_dict().items()}
    registered = se.register_model(model)
    assert model.training and registered.model is not model
    for k, v in model.state_dict().items():
        assert v.dtype == before[k][0] and torch.equal(v, before[k][1]), k
    assert next(registered.model.h_s.parameters()).dtype == torch.float64


def test_loaded_engines_are_bounded_and_reload_when_needed(tmp_path, photo, monkeypatch):
    """Engines loaded from files used to be kept forever; now the least recently used goes first."""
    monkeypatch.setattr(engine, "MAX_LOADED_ENGINES", 2)
    paths = []
    for seed in range(3):
        paths.append(tmp_path / f"m{seed}.safetensors")
        save_weights(build_tiny(seed=10 + seed), paths[-1])
    files = [se.encode(photo, 4, caption=False, model=p) for p in paths]
    assert len(engine._loaded) <= 2
    assert str(paths[0].resolve()) not in {str(k[0]) for k in engine._loaded}  # the oldest was dropped
    monkeypatch.setenv("SELIC_MODEL_PATH", str(tmp_path))
    for data in files:  # decoding finds each model again, loaded or not
        assert np.asarray(se.decode(data)).shape == photo.shape
    assert len(engine._loaded) <= 2
