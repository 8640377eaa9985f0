"""Training: exact resume, DDP replicas, export (a handful of steps on a generated dataset)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selic_engine.config import ModelConfig, TrainConfig
from selic_engine.testing import TINY
from selic_engine.training import checkpoint
from selic_engine.training.averaging import weight_average
from selic_engine.training.loop import train

from .conftest import export, train_config


def config(dataset: Path, out: Path, **changes) -> TrainConfig:
    values = dict(preset=str(dataset / "tiny.json"), data=str(dataset), out=str(out), batch_size=2, crop=64,
                  min_crop=64, workers=0, val_every=2, val_images=2, ckpt_every=1, steps=4, threads=1)
    return TrainConfig(**{**values, **changes})


def test_resume_is_exact(dataset, tmp_path):
    straight = checkpoint.load(train(config(dataset, tmp_path / "a")))
    train(config(dataset, tmp_path / "b", steps=2))
    resumed = checkpoint.load(train(config(dataset, tmp_path / "b", resume="auto")))
    assert straight["step"] == resumed["step"] == 4
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    for name, tensor in straight["ema"].items():  # the weight average resumes exactly too
        assert torch.equal(tensor, resumed["ema"][name]), name
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert any("val" in row and "val_ema" in row for row in log)
    starts = [row["start"] for row in log if "start" in row]
    assert len(starts) == 2 and all(s["machine"] and s["precision"] for s in starts)


def test_weight_average_keeps_frozen_weights_bit_exact():
    """The average's lerp turns -0.0 into +0.0, so a frozen decoder weight of -0.0 in the shipped file gave every
    `--adapter` export another model id (its files then named a decoder nobody has): frozen weights are the
    model's, copied, not averaged."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight[0, 0] = -0.0
    model[1].requires_grad_(False)
    average = weight_average(model, 0.9)
    with torch.no_grad():
        model[0].weight += 1
    average.update_parameters(model)
    frozen, trained = average.module[1].weight, average.module[0].weight
    assert torch.signbit(frozen[0, 0]) and frozen.numpy().tobytes() == model[1].weight.numpy().tobytes()
    assert not torch.equal(trained, model[0].weight)  # the trained ones are still averaged


def test_weight_average_is_validated_and_exported(dataset, tmp_path):
    """The EMA follows the weights (decay 0.5 over 3 steps is neither the first nor the last weights) and is
    what `export` ships unless raw=True."""
    from selic_engine.weights.files import load_weights

    ckpt = train(config(dataset, tmp_path / "run", steps=3, ema_decay=0.5))
    state = checkpoint.load(ckpt)
    raw = state["model"]["g_s.0.conv1.weight"]
    ema = state["ema"]["module.g_s.0.conv1.weight"]
    assert int(state["ema"]["n_averaged"]) == 4  # the starting weights, then one update per step
    assert not torch.equal(raw, ema)
    export(ckpt, tmp_path / "ema.safetensors")
    exported, _ = load_weights(tmp_path / "ema.safetensors")
    assert torch.equal(exported.state_dict()["g_s.0.conv1.weight"], ema)
    export(ckpt, tmp_path / "raw.safetensors", "--raw")
    exported_raw, _ = load_weights(tmp_path / "raw.safetensors")
    assert torch.equal(exported_raw.state_dict()["g_s.0.conv1.weight"], raw)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    validations = [row for row in log if "val" in row]
    assert [row["step"] for row in validations] == [2, 3] and validations[1]["train_seconds"] > 0
    for row in validations:
        for results in (row["val"], row["val_ema"]):
            assert set(results) == {"q1", "q4", "q8"}
            # the ceiling: g_s on the unquantized latent, beside the coded one
            assert all(math.isfinite(r["ceiling_psnr"]) and math.isfinite(r["psnr"]) for r in results.values())
    with pytest.raises(ValueError, match="ema_decay"):
        train(config(dataset, tmp_path / "bad", ema_decay=1.5))


def test_precision_auto_follows_the_hardware(dataset, tmp_path):
    from selic_engine.precision import cpu_has_native_bf16, resolve

    assert resolve("auto", "cpu") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert resolve("float32", "cpu") == torch.float32 and resolve("bfloat16", "cpu") == torch.bfloat16
    train(config(dataset, tmp_path / "run", steps=1, precision="float32"))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["start"]["precision"] == "torch.float32"


def test_time_budget_stops_early_with_a_checkpoint(dataset, tmp_path):
    """--minutes ends a run (the GPU burst's ten minutes) with a resumable checkpoint before `steps`."""
    state = checkpoint.load(train(config(dataset, tmp_path / "run", steps=1000, minutes=1e-9)))
    assert state["step"] < 1000


def test_export_writes_weights_and_refuses_other_config(dataset, tmp_path):
    ckpt = train(config(dataset, tmp_path / "run", steps=1))
    out = tmp_path / "w.safetensors"
    mid = export(ckpt, out)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["w.safetensors"]["model_id"] == mid
    from selic_engine.weights.files import read_metadata

    assert read_metadata(out)["embedder"] == "all-MiniLM-L6-v2"  # what its text vectors mean
    import selic_engine as se

    data = se.encode(np.zeros((40, 50, 3), np.uint8), 3, caption=False, model=out)
    assert se.decode(data).size == (50, 40)
    with pytest.raises(SystemExit, match="does not match"):
        export(ckpt, tmp_path / "x.safetensors", "--preset", "small")


def test_float16_export_halves_the_file_and_codes_like_float32(dataset, tmp_path):
    """Half-precision storage: float tensors stored as float16, tables built from the rounded weights."""
    from safetensors import safe_open

    import selic_engine as se

    ckpt = train(config(dataset, tmp_path / "run", steps=1))
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    mid_full, mid_half = export(ckpt, full), export(ckpt, half, "--float16")
    assert mid_full != mid_half  # different decoder weights, so a different id

    def float_bytes(path: Path) -> tuple[int, set[torch.dtype]]:
        with safe_open(str(path), framework="pt") as f:
            floats = [t for t in map(f.get_tensor, f.keys()) if t.is_floating_point()]
        return sum(t.numel() * t.element_size() for t in floats), {t.dtype for t in floats}

    with safe_open(str(half), framework="pt") as f:
        assert f.metadata()["storage"] == "float16"
    (full_bytes, full_types), (half_bytes, half_types) = float_bytes(full), float_bytes(half)
    assert full_types == {torch.float32} and half_types == {torch.float16}
    assert 2 * half_bytes == full_bytes  # the weights halve; the integer entropy tables stay as they are
    image = np.asarray(Image.open(sorted(dataset.glob("*/*.png"))[0]).convert("RGB"))
    out_full = np.asarray(se.decode(se.encode(image, 6, caption=False, model=full)), np.float64)
    data = se.encode(image, 6, caption=False, model=half)
    assert se.encode(image, 6, caption=False, model=half) == data  # deterministic from the rounded file
    out_half = np.asarray(se.decode(data), np.float64)
    assert np.abs(out_half - out_full).mean() < 1.0  # float16 rounding moves pixels by far less than a level


def test_ddp_two_cpu_processes_keep_identical_replicas(dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "selic_engine", "train", "--preset", str(dataset / "tiny.json"), "--data", str(dataset),
           "--out", str(out), "--batch-size", "2", "--crop", "64", "--min-crop", "64", "--workers", "0",
           "--val-every", "0", "--val-images", "2", "--steps", "3", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    digests = json.loads((out / "replicas.json").read_text())
    assert len(digests) == 2 and digests[0] == digests[1]
    assert checkpoint.load(out / "last.pt")["step"] == 3


def test_widening_keeps_what_the_narrow_model_computes():
    """Net2Net-style widening: the wider model reproduces the narrow one's reconstruction and likelihoods."""
    from selic_engine.config import ModelConfig
    from selic_engine.model import build_model
    from selic_engine.training.widen import widen, widenable

    torch.manual_seed(0)
    narrow = ModelConfig(**TINY)
    model = build_model(narrow).eval()
    for p in model.parameters():  # move away from the init, so that copied and fresh values differ
        p.data.add_(0.05 * torch.randn_like(p))
    wide_cfg = narrow.replace(N=24)
    assert widenable(narrow, wide_cfg) and not widenable(narrow, narrow.replace(M=48))
    wide = widen(model, wide_cfg).eval()
    assert wide.g_s[0].conv1.weight.shape[0] == 24
    x, q = torch.rand(2, 3, 64, 64), torch.tensor([2.0, 7.0])
    emb, has = torch.randn(2, 384), torch.tensor([True, False])
    with torch.no_grad():
        a, b = model(x, q, emb, has), wide(x, q, emb, has)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5)
    for k in ("y", "z"):
        assert torch.allclose(a["likelihoods"][k], b["likelihoods"][k], atol=1e-6)
    with pytest.raises(ValueError, match="only N"):
        widen(model, narrow.replace(Nz=8))


def test_widening_decoder_v2_keeps_what_it_computes():
    """Decoder v2's g_a (N) and light g_s (its widths) widen function-preservingly; its entropy model may not."""
    from selic_engine.config import DecoderV2Config, ElicConfig
    from selic_engine.model import build_model
    from selic_engine.training.widen import widen, widenable

    from .test_selic_v2 import TINY_V2

    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, "architecture": "selic-v2", "v2": TINY_V2})).eval()
    for p in model.parameters():  # move away from the init, so that copied and fresh values differ
        p.data.add_(0.05 * torch.randn_like(p))
    wide_cfg = model.config.replace(N=24, v2=DecoderV2Config(TINY_V2.entropy, (40, 24, 16, 12)))
    assert widenable(model.config, wide_cfg)
    assert not widenable(model.config, model.config.replace(v2=DecoderV2Config(TINY_V2.entropy, (32, 16, 16, 4))))
    assert not widenable(model.config, model.config.replace(v2=DecoderV2Config(ElicConfig(TINY_V2.entropy.groups,
                                                                                          Nz=24), (32, 16, 16, 8))))
    wide = widen(model, wide_cfg).eval()
    assert wide.g_s[0].conv1.weight.shape[0] == 40 and wide.g_a[0].conv1.weight.shape[0] == 24
    x, q = torch.rand(2, 3, 64, 64), torch.tensor([2.0, 7.0])
    with torch.no_grad():
        a, b = model(x, q), wide(x, q)
    assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-5)
    for k in a["likelihoods"]:
        assert torch.allclose(a["likelihoods"][k], b["likelihoods"][k], atol=1e-6)


def test_training_a_wider_preset_starts_from_narrower_weights(dataset, tmp_path):
    """--init-weights from a narrower model of the same layout widens it and carries its step count on."""
    ckpt = train(config(dataset, tmp_path / "narrow", steps=2))
    weights = tmp_path / "narrow.safetensors"
    export(ckpt, weights)
    (tmp_path / "wide.json").write_text(json.dumps({"base": "small", **TINY, "N": 24}))
    wide = checkpoint.load(train(config(dataset, tmp_path / "wide", preset=str(tmp_path / "wide.json"),
                                        init_weights=str(weights), steps=4)))
    assert wide["step"] == 4
    assert wide["model"]["g_s.0.conv1.weight"].shape[0] == 24


def test_gpu_burst_trains_on_cpu_what_it_packed(dataset, tmp_path, monkeypatch):
    """The burst's pack and the training its device command runs, here on the CPU (small crops): it continues the
    packed weights with their own config. The command once named preset small-v2, which any other v2 variant
    (the main run's wider g_s) cannot start from."""
    import dataclasses
    import shlex

    from selic_engine.testing import build_tiny
    from selic_engine.training.burst import BURST_DIR, INIT, device_command, pack_data, pack_init, train_args
    from selic_engine.training.data import list_images, split_holdout
    from selic_engine.weights.files import read_metadata, save_weights

    from .test_selic_v2 import TINY_V2

    monkeypatch.chdir(tmp_path)  # the command names .burst/ relative to the repository root
    packed = BURST_DIR / "data"
    assert pack_data(dataset, packed, max_side=96, holdout=2) > 0
    _, held = split_holdout(list_images(dataset), 2)
    assert len(list_images(packed)) == 6 and not {str(Path(p).with_suffix(".jpg")) for p in held} & set(
        list_images(packed))  # the validation hold-out never travels
    assert all(max(Image.open(packed / p).size) <= 96 for p in list_images(packed))
    weights = tmp_path / "v2.safetensors"
    save_weights(build_tiny(architecture="selic-v2", v2=TINY_V2), weights, {"step": "7", "train_seconds": "9"})
    assert 0 < pack_init(weights, BURST_DIR) < weights.stat().st_size
    assert read_metadata(BURST_DIR / INIT)["storage"] == "float16" and read_metadata(BURST_DIR / INIT)["step"] == "7"
    command = device_command()
    cfg = train_config(*shlex.split(command.split("-m selic_engine train ")[1].split(" && ")[0]))
    assert (cfg.batch_size, cfg.crop, cfg.minutes, cfg.init_weights) == (16, 256, 9.0, f"{BURST_DIR}/{INIT}")
    assert train_config(*train_args(cfg)) == cfg  # the command line carries exactly this config
    cfg = dataclasses.replace(cfg, out=str(tmp_path / "run"), minutes=0.05, batch_size=2, crop=64, min_crop=64,
                              workers=0, threads=1)
    state = checkpoint.load(train(cfg))
    assert state["step"] >= 8 and "ema" in state  # it continues the packed weights' steps
    assert ModelConfig.from_json(state["config"]) == ModelConfig.from_json(read_metadata(weights)["config"])


def test_a_non_finite_batch_is_skipped_not_learned(dataset, tmp_path, monkeypatch):
    """One NaN loss (a bad batch, a bfloat16 overflow) once poisoned the weights, their average and the
    checkpoint: the step is now skipped."""
    from selic_engine.training import loop

    real, calls = loop.rd_loss, []

    def flaky(out, x, lam):
        loss, bpp, mse = real(out, x, lam)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), bpp, mse

    monkeypatch.setattr(loop, "rd_loss", flaky)
    state = checkpoint.load(train(config(dataset, tmp_path / "run", steps=3, val_every=0)))
    assert state["step"] == 3 and len(calls) == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in state["ema"].values() if v.is_floating_point())


def test_caption_dropout_never_changes_the_crops(dataset):
    """Two runs that differ only in caption dropout see the same pixels (the fine-tune ablation (e) compares
    such runs); before, a dropped caption skipped a random draw and every later crop of the batch moved."""
    from selic_engine.training.data import CropStream, list_images

    paths = list_images(dataset)
    ids = {p: [k] for k, p in enumerate(paths)}
    kept, dropped = (CropStream(dataset, paths, ids, 4, 64, 64, dropout, seed=3) for dropout in (0.2, 1.0))
    for step in range(3):
        (xa, _, _), (xb, _, hb) = kept.batch(step), dropped.batch(step)
        assert torch.equal(xa, xb)
        assert not hb.any()
