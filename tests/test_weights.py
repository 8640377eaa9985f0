"""The weights module: the shipped file still names its decoder, the module groups cover the model, and a file
whose recorded model id disagrees with its tensors is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from selic_engine import weights
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
        assert model_id(state) == manifest[path.name]["model_id"] == read_metadata(path)["model_id"], path.name
        assert load_weights(path)[1] == manifest[path.name]["model_id"], path.name


def test_module_groups_split_the_model():
    children = {name for name, _ in build_tiny().named_children()}
    assert set(weights.ENCODER_MODULES) | set(weights.DECODER_MODULES) == children
    assert not set(weights.ENCODER_MODULES) & set(weights.DECODER_MODULES)


def test_a_recorded_model_id_that_differs_from_the_tensors_is_refused(tiny_weights, tmp_path: Path):
    with safe_open(str(tiny_weights), framework="pt") as f:
        state, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    forged = tmp_path / "forged.safetensors"
    save_file(state, str(forged), metadata={**meta, "model_id": "0" * 16})
    with pytest.raises(ValueError, match="does not match its tensors"):
        load_weights(forged)
