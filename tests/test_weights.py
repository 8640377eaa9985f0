"""The weights module: the shipped file still names its decoder, the module groups cover the model, and a file
whose recorded model id disagrees with its tensors is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from selic_engine import weights
from selic_engine.config import ModelConfig
from selic_engine.testing import build_tiny
from selic_engine.weights.files import load_weights, model_id, read_metadata


def test_shipped_weights_recompute_the_manifest_model_id():
    """Files in the wild name the shipped decoder by this id: the digest and the key names must never change."""
    manifest = weights.read_manifest(weights.WEIGHTS_DIR)
    shipped = sorted(weights.WEIGHTS_DIR.glob("*.safetensors"))
    if not shipped:
        pytest.skip("no shipped weights in this checkout yet")
    for path in shipped:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        config = ModelConfig.from_json(read_metadata(path)["config"])
        assert model_id(state, config) == manifest[path.name]["model_id"] == read_metadata(path)["model_id"], path.name
        assert load_weights(path)[1] == manifest[path.name]["model_id"], path.name


def test_module_groups_split_the_model():
    model = build_tiny()
    children = {name for name, _ in model.named_children()}
    assert set(model.ENCODER_MODULES) | set(model.DECODER_MODULES) == children
    assert not set(model.ENCODER_MODULES) & set(model.DECODER_MODULES)


def test_a_key_outside_every_module_group_is_refused_not_skipped(tiny_weights):
    """The id once skipped a prefix it did not know: a tensor could then change without changing the id."""
    model = build_tiny()
    state = {**model.state_dict(), "stray.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="belongs to no module group"):
        model_id(state, model.config)


def test_a_recorded_model_id_that_differs_from_the_tensors_is_refused(tiny_weights, tmp_path: Path):
    with safe_open(str(tiny_weights), framework="pt") as f:
        state, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    forged = tmp_path / "forged.safetensors"
    save_file(state, str(forged), metadata={**meta, "model_id": "0" * 16})
    with pytest.raises(ValueError, match="does not match its tensors"):
        load_weights(forged)


@pytest.mark.parametrize("architecture", ["selic-v1", "selic-v2"])
def test_a_float16_file_keeps_the_likelihood_floor(architecture: str, tmp_path: Path):
    """float16 stores compressai's likelihood floor (1e-9) as 0: the rate of an outlying latent was then
    log2(0), infinite, and training from such a file (the shipped weights, the GPU burst's pack) went non-finite."""
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    from selic_engine.weights.files import save_weights

    from .test_selic_v2 import TINY_V2

    model = build_tiny(**({"architecture": architecture, "v2": TINY_V2} if architecture == "selic-v2" else {}))
    path = tmp_path / "half.safetensors"
    save_weights(model, path, dtype=torch.float16)
    loaded, _ = load_weights(path)
    outlier = torch.full((1, 32, 2, 2), 1e4)
    rates = [-torch.log2(m(outlier[:, :m.channels], training=False)[1]) for m in loaded.modules()
             if isinstance(m, EntropyBottleneck)]
    rates += [-torch.log2(m(outlier, torch.full_like(outlier, 0.2), training=False)[1]) for m in loaded.modules()
              if isinstance(m, GaussianConditional)]
    assert len(rates) == 2 and all(torch.isfinite(r).all() for r in rates)
