"""Decoder v2's assembly (training.assemble): v1's encoder side, stage 2's entropy model and stage 1's light g_s make
one selic-v2 model (each stage's weight average), which `selic train` then fine-tunes jointly (a few steps of tiny
stages on conftest's generated `dataset`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selic_engine.model import SelicV2
from selic_engine.testing import TINY, build_tiny
from selic_engine.training import assemble, checkpoint, distill, entropy_stage
from selic_engine.training.averaging import averaged_weights
from selic_engine.training.loop import train
from selic_engine.weights.files import load_weights, read_metadata, save_weights

from .conftest import resumes_exactly
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


def test_a_v2_models_own_g_s_trains_on_its_cached_crops_and_goes_back_into_it(stages, dataset, tmp_path):
    """The synthesis stage with --init teacher --cache-crops: the student starts as the v2 model's g_s, every crop is
    coded once, a resumed run gives the straight run's weights, and assemble --base swaps only g_s."""
    v1_path, entropy, synthesis, preset = stages
    base = tmp_path / "v2.safetensors"
    assemble.main(["--v1", str(v1_path), "--entropy", str(entropy), "--synthesis", str(synthesis),
                   "--preset", str(preset), "-o", str(base)])
    model, base_id = load_weights(base)

    def run(out, steps, *flags):
        return checkpoint.load(distill.distill(distill.parse_args([
            "--teacher", str(base), "--init", "teacher", "--alpha", "0", "--cache-crops", "3", "--out",
            str(tmp_path / out), "--data", str(dataset), "--steps", str(steps), "--batch-size", "2", "--crop", "64",
            "--val-every", "3", "--val-images", "2", "--ckpt-every", "1", "--threads", "1", *flags])))

    two, resumed = resumes_exactly(run, ("student", "ema"))
    assert resumed["widths"] == WIDTHS and resumed["teacher_id"] == base_id
    cache = tmp_path / "b" / "crops"
    assert sorted(p.name for p in cache.glob("*.npy")) == ["filled.npy", "g_s_input.npy", "photo.npy"]  # alpha 0
    assert np.load(cache / "photo.npy").dtype == np.uint8 and np.load(cache / "filled.npy").sum() <= 3
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    validation = [row for row in log if "val" in row][-1]
    for r in validation["val"].values():  # the reference is the base's own g_s on the same latents
        assert math.isfinite(r["psnr"]) and math.isfinite(r["teacher_psnr"])
    assert validation["macs_vs_teacher"] == 1.0

    out = tmp_path / "v2-gs.safetensors"
    assemble.main(["--base", str(base), "--synthesis", str(tmp_path / "b" / "last.pt"), "-o", str(out)])
    swapped, _ = load_weights(out)
    student = averaged_weights(resumed["ema"])
    for key, value in swapped.state_dict().items():
        if key.startswith("g_s."):
            assert torch.equal(value, student[key.removeprefix("g_s.")]), key
        else:
            assert torch.equal(value, model.state_dict()[key]), key
    meta = read_metadata(out)
    assert meta["step"] == read_metadata(base)["step"] and float(meta["train_seconds"]) == resumed["train_seconds"]
    assert json.loads(meta["assembled_from"])["base"]["model_id"] == base_id

    with pytest.raises(ValueError, match="learned from decoder"):
        assemble.with_synthesis(swapped, "0" * 16, resumed)
    with pytest.raises(ValueError, match="selic-v2"):  # v1's g_s is not a light one to train on
        run("c", 1, "--teacher", str(v1_path))
