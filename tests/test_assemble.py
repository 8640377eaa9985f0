"""Decoder v2's assembly (training.assemble): v1's encoder side, stage 2's entropy model and stage 1's light g_s make
one selic-v2 model (each stage's weight average), which `selic train` then fine-tunes jointly (a few steps of tiny
stages on conftest's generated `dataset`)."""

from __future__ import annotations

import json

import pytest
import torch

from selic_engine.model import SelicV2
from selic_engine.testing import TINY, build_tiny
from selic_engine.training import assemble, checkpoint, distill, entropy_stage
from selic_engine.training.averaging import averaged_weights
from selic_engine.training.loop import train
from selic_engine.weights.files import load_weights, read_metadata, save_weights

from .test_training import config

TINY_V2 = {"groups": [4, 4, 8, 16], "Nz": 8, "hyper_hidden": 8, "param_hidden": 8, "context_hidden": 8}
WIDTHS = [16, 16, 8, 8]


@pytest.fixture(scope="module")
def stages(dataset, tmp_path_factory):
    """(tiny v1 weights, its entropy stage's last.pt, its distillation's last.pt, the tiny-v2 preset file)."""
    root = tmp_path_factory.mktemp("stages")
    v1 = root / "v1.safetensors"
    save_weights(build_tiny(), v1)
    common = ["--data", str(dataset), "--steps", "2", "--batch-size", "2", "--crop", "64", "--val-every", "0",
              "--val-images", "2", "--ckpt-every", "1", "--threads", "1"]
    entropy = entropy_stage.train_entropy(entropy_stage.parse_args([
        "--weights", str(v1), "--out", str(root / "entropy"), "--cache-crops", "4", "--groups", "4,4,8,16",
        "--nz", "8", "--hyper-hidden", "8", "--param-hidden", "8", "--context-hidden", "8", *common]))
    synthesis = distill.distill(distill.parse_args([
        "--teacher", str(v1), "--out", str(root / "distill"), "--widths", ",".join(map(str, WIDTHS)), *common]))
    preset = root / "tiny-v2.json"
    preset.write_text(json.dumps({"base": "small", **TINY, "name": "tiny-v2", "architecture": "selic-v2",
                                  "v2": {"entropy": TINY_V2, "synthesis_widths": WIDTHS}}))
    return v1, entropy, synthesis, preset


def test_assembly_takes_each_part_from_its_stage_and_fine_tunes_jointly(stages, dataset, tmp_path):
    v1_path, entropy, synthesis, preset = stages
    out = tmp_path / "v2.safetensors"
    assemble.main(["--v1", str(v1_path), "--entropy", str(entropy), "--synthesis", str(synthesis),
                   "--preset", str(preset), "-o", str(out)])
    model, _ = load_weights(out)
    v1, _ = load_weights(v1_path)
    assert isinstance(model, SelicV2) and model.config.name == "tiny-v2"
    state = model.state_dict()
    for key, value in v1.state_dict().items():
        if key.split(".")[0] in ("g_a", "fusion", "gains"):
            assert torch.equal(state[key], value), key
    codec = averaged_weights(checkpoint.load(entropy)["ema"])
    student = averaged_weights(checkpoint.load(synthesis)["ema"])
    assert torch.equal(state["latent_codec.context.hyper_proj.0.weight"], codec["context.hyper_proj.0.weight"])
    assert torch.equal(state["g_s.0.conv1.weight"], student["0.conv1.weight"])
    history = json.loads(read_metadata(out)["assembled_from"])
    assert history["entropy"]["step"] == history["synthesis"]["step"] == 2 and read_metadata(out)["step"] == "0"

    joint = checkpoint.load(train(config(dataset, tmp_path / "joint", preset=str(preset), init_weights=str(out),
                                         steps=2, val_every=0)))
    assert joint["step"] == 2  # the joint stage counts its own steps
    assert not torch.equal(joint["model"]["g_a.0.conv1.weight"], state["g_a.0.conv1.weight"])  # g_a trains too
    assert not torch.equal(joint["model"]["g_s.0.conv1.weight"], state["g_s.0.conv1.weight"])


def test_stages_from_another_v1_or_shape_are_refused(stages):
    v1_path, entropy, synthesis, preset = stages
    v1, v1_id = load_weights(v1_path)
    entropy_state, synthesis_state = checkpoint.load(entropy), checkpoint.load(synthesis)
    with pytest.raises(ValueError, match="learned from decoder"):
        assemble.assemble(v1, "0" * 16, entropy_state, synthesis_state, str(preset))
    with pytest.raises(ValueError, match="not preset"):
        assemble.assemble(v1, v1_id, entropy_state, {**synthesis_state, "widths": [16, 16, 8, 4]}, str(preset))
