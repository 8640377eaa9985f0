"""Decoder v2 as a registered architecture ("selic-v2", development only): a tiny model built from its config codes
an image through the engine, its module groups cover its weights, and its id is its own."""

from __future__ import annotations

import numpy as np
import pytest

import selic_engine as se
from selic_engine.config import DecoderV2Config, ElicConfig, ModelConfig
from selic_engine.container import unpack
from selic_engine.model import SelicV2
from selic_engine.testing import TINY, build_tiny
from selic_engine.weights.files import load_weights, model_id, save_weights

TINY_V2 = DecoderV2Config(ElicConfig(groups=(4, 4, 8, 16), Nz=16, hyper_hidden=16, param_hidden=16,
                                     context_hidden=16), synthesis_widths=(32, 16, 16, 8))


def tiny_v2(seed: int = 0) -> SelicV2:
    model = build_tiny(seed, architecture="selic-v2", v2=TINY_V2)
    assert isinstance(model, SelicV2)
    return model


def test_config_round_trips_and_v1_json_is_unchanged():
    config = ModelConfig(**{**TINY, "architecture": "selic-v2", "v2": TINY_V2})  # type: ignore[arg-type]
    assert ModelConfig.from_json(config.to_json()) == config
    assert config.replace(text_dim=16).v2 == TINY_V2
    assert "v2" not in ModelConfig(**TINY).to_json()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="v2 fields"):
        SelicV2(config.replace(v2=None))


def test_tiny_v2_round_trips_through_the_engine(photo, tmp_path):
    model = tiny_v2()
    state = model.state_dict()
    groups = {key: model.module_group(key) for key in state}  # every key in a group, none skipped
    assert groups["latent_codec.h_a.0.weight"] == "encoder" and groups["latent_codec.context.hyper_proj.0.weight"] \
        == groups["g_s.0.conv1.weight"] == "decoder"
    mid = se.register_model(model).model_id
    assert mid == model_id(state, model.config)
    assert mid != model_id(state, model.config.replace(v2=DecoderV2Config(TINY_V2.entropy, (32, 16, 16, 4))))
    data = se.encode(photo, 4, caption=False, model=mid)
    assert unpack(data).header.model_id == mid
    again = se.decode(data)
    assert np.asarray(again).shape == photo.shape
    assert np.array_equal(np.asarray(se.decode(data)), np.asarray(again))
    path = tmp_path / "v2.safetensors"
    save_weights(model, path)
    loaded, loaded_id = load_weights(path)
    assert isinstance(loaded, SelicV2) and loaded_id == mid
