"""Decoder v2, stage 2: the entropy model trained on cached v1 latents (a few steps of a tiny v1 on the generated
pool of conftest's `dataset`)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from selic_engine.testing import build_tiny
from selic_engine.training import checkpoint, entropy_stage, record
from selic_engine.weights.files import save_weights

from .conftest import resumes_exactly


def test_stage_caches_latents_resumes_exactly_and_reports_against_v1(dataset, tmp_path, monkeypatch):
    weights = tmp_path / "v1.safetensors"
    save_weights(build_tiny(), weights)
    file_digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setattr(record, "LOG_EVERY", 1)  # a rate line every step

    def run(out, steps, *flags):
        return checkpoint.load(entropy_stage.train_entropy(entropy_stage.parse_args([
            "--weights", str(weights), "--out", str(tmp_path / out), "--data", str(dataset), "--steps", str(steps),
            "--batch-size", "2", "--crop", "64", "--cache-crops", "5", "--groups", "4,4,8,16", "--nz", "8",
            "--hyper-hidden", "8", "--param-hidden", "8", "--context-hidden", "8", "--val-every", "2",
            "--val-images", "2", "--ckpt-every", "1", "--threads", "1", *flags])))

    two, resumed = resumes_exactly(run, ("codec", "ema"))
    assert not torch.equal(two["codec"]["context.hyper_proj.0.weight"], resumed["codec"]["context.hyper_proj.0.weight"])

    cache = tmp_path / "b" / "latents"
    latents = np.load(cache / "latents.npy", mmap_mode="r")
    filled = np.load(cache / "filled.npy")
    qualities = np.load(cache / "qualities.npy")
    assert latents.shape == (5, 32, 4, 4) and latents.dtype == np.float16  # bounded: --cache-crops entries
    assert filled.any() and np.all((qualities[filled] >= 1) & (qualities[filled] <= 8))
    a_latents = np.load(tmp_path / "a" / "latents" / "latents.npy", mmap_mode="r")
    assert np.array_equal(latents[filled], a_latents[filled])  # an entry is the same whenever it was filled

    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    rates = [row for row in log if "bpp" in row]
    assert [row["step"] for row in rates] == [1, 2, 3]
    assert all(row["bpp"] > 0 and row["steps_per_s"] > 0 and row["cached"] > 0 for row in rates)
    assert rates[-1]["train_seconds"] > rates[-2]["train_seconds"]  # counted across the resume
    validations = [row for row in log if "val" in row]
    assert [row["step"] for row in validations] == [2, 3]
    for row in validations:
        assert set(row["val"]) == set(row["val_ema"]) == {"q1", "q4", "q8"}
        for r in row["val"].values():
            assert math.isfinite(r["bpp"]) and r["bpp"] > 0 and math.isfinite(r["v1_bpp"]) and r["v1_bpp"] > 0
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == file_digest

    with pytest.raises(ValueError, match="another --out"):
        run("b", 4, "--resume", "auto", "--nz", "4")

