"""Decoder v2, stage 1: the light g_s's cost against v1's, and the distillation stage (a few steps of a tiny teacher
on the generated pool of conftest's `dataset`)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from benchmarks.speed import conv_macs
from selic_engine.model.light import light_synthesis
from selic_engine.model.transforms import synthesis
from selic_engine.testing import build_tiny
from selic_engine.training import checkpoint, distill, record
from selic_engine.weights.files import load_weights, save_weights

from .conftest import resumes_exactly


def test_light_g_s_costs_at_most_a_quarter_of_v1s():
    """Issue 31's budget, on a 768x512 image's latent, counted on meta copies (shapes alone decide the count)."""
    latent = torch.zeros(1, 128, 32, 48, device="meta")
    v1 = conv_macs(synthesis(128, 128).to("meta"), latent)
    light = conv_macs(light_synthesis(128).to("meta"), latent)
    assert v1 > 90e9  # v1's g_s: 247 kMAC per pixel
    assert light <= v1 / 4
    assert distill.g_s_macs(light_synthesis(128), 128) == light  # what the stage logs is the same count


def test_student_starts_grey_and_runs_under_bfloat16_autocast():
    student = distill.build_student(128, (192, 128, 64, 32))
    y = torch.randn(2, 128, 4, 6)
    with torch.no_grad():
        out = student(y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = student(y)
    assert out.shape == low.shape == (2, 3, 64, 96)
    assert abs(out.mean().item() - 0.5) < 0.1 and out.std().item() < 0.5
    assert torch.isfinite(low).all() and (low.float() - out).abs().mean() < 0.05


def test_distillation_resumes_exactly_and_leaves_the_teacher_alone(dataset, tmp_path, monkeypatch):
    teacher_path = tmp_path / "teacher.safetensors"
    save_weights(build_tiny(), teacher_path)
    file_digest = hashlib.sha256(teacher_path.read_bytes()).hexdigest()
    teachers = []

    def load_and_keep(path):
        model, mid = load_weights(path)
        teachers.append(model)
        return model, mid

    monkeypatch.setattr(distill, "load_weights", load_and_keep)
    monkeypatch.setattr(record, "LOG_EVERY", 1)  # a loss line every step

    def run(out, steps, *flags):
        return checkpoint.load(distill.distill(distill.parse_args([
            "--teacher", str(teacher_path), "--out", str(tmp_path / out), "--data", str(dataset),
            "--steps", str(steps), "--batch-size", "2", "--crop", "64", "--widths", "16,16,8,8", "--val-every", "2",
            "--val-images", "2", "--ckpt-every", "1", "--threads", "1", *flags])))

    two, resumed = resumes_exactly(run, ("student", "ema"))
    assert not torch.equal(two["student"]["0.conv1.weight"], resumed["student"]["0.conv1.weight"])

    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    starts = [row["start"] for row in log if "start" in row]
    assert len(starts) == 2 and all(s["machine"] and s["precision"] for s in starts)
    losses = [row for row in log if "loss" in row]
    assert [row["step"] for row in losses] == [1, 2, 3]
    assert all(row["loss"] > 0 and row["steps_per_s"] > 0 and row["skipped"] == 0 for row in losses)
    assert losses[-1]["train_seconds"] > losses[-2]["train_seconds"]  # counted across the resume
    validations = [row for row in log if "val" in row]
    assert [row["step"] for row in validations] == [2, 3]
    for row in validations:
        assert set(row["val"]) == set(row["val_ema"]) == {"q1", "q4", "q8"}
        for r in row["val"].values():
            assert math.isfinite(r["psnr"]) and math.isfinite(r["teacher_psnr"])
        assert row["macs_vs_teacher"] > 0 and row["train_seconds"] > 0

    assert hashlib.sha256(teacher_path.read_bytes()).hexdigest() == file_digest
    reference = load_weights(teacher_path)[0].state_dict()
    for teacher in teachers:  # the teacher every session trained against, after its steps
        for name, tensor in teacher.state_dict().items():
            assert tensor.numpy().tobytes() == reference[name].numpy().tobytes(), name

    with pytest.raises(ValueError, match="another --out"):
        run("b", 4, "--resume", "auto", "--widths", "16,16,8,4")

