"""Decoder v2, stage 1 (issue 31): a lighter g_s (model.light) distilled from decoder v1's.

The frozen teacher (v1 weights, only read) encodes random training crops at random qualities without a caption,
rounds the latent as its decoder receives it and synthesises it. The student learns from the same inverse-gained
latent to give back the photo and the teacher's image: loss = MSE(student, x) + alpha * MSE(student, teacher).
The teacher's image is the easier target early on (it is a function of the latent; the photo is not quite), the
photo keeps the student from copying the teacher's errors.

    python -m selic_engine.training.distill --teacher WEIGHTS.safetensors --out RUN_DIR --steps N --threads T \\
        [--resume auto] [--batch-size 2] [--crop 256] [--lr 2e-4] [--alpha 1] [--widths 192,128,64,32] [--minutes M]

It reuses the main loop's parts: its crops (training.data, from the photos outside the same 12-image hold-out,
which it validates on), its quality draws, its NaN-step skipping, weight average, precision choice, run record
(log.jsonl, the atomic last.pt) and exact resume. Each validation logs, per quality, the PSNR of the student
(and of its average) and of the teacher's g_s on the same latents, the student's MACs relative to the teacher's
g_s, and the training seconds, so that dB per CPU-hour can be read off the log.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from ..config import LIGHT_SYNTHESIS_WIDTHS, StageConfig
from ..macs import conv_macs
from ..model import Architecture
from ..model.light import light_synthesis, start_near_grey
from ..precision import resolve
from ..weights.files import load_weights
from . import checkpoint
from .averaging import weight_average
from .data import CropStream, list_images, split_holdout
from .flags import add_flags, add_stage_flags, int_tuple
from .loop import due, random_qualities
from .optim import FiniteSteps
from .record import RunRecord, last_checkpoint, open_stage
from .validation import VAL_QUALITIES, psnr, validation_images

#: The latent of a 768x512 image (Kodak's size): where decoder costs are compared (issue 31).
COST_LATENT = (32, 48)


@dataclass(kw_only=True)
class DistillConfig(StageConfig):
    teacher: str  # decoder v1 weights (.safetensors), only read
    alpha: float = 1.0  # weight of MSE to the teacher's image, beside MSE to the photo
    widths: tuple[int, ...] = LIGHT_SYNTHESIS_WIDTHS  # the student's channels at 1/16, 1/8, 1/4, 1/2


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to dtype, or nothing for float32 (autocast has no float32 mode on the CPU)."""
    return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def decoded_latent(teacher: Architecture, x: Tensor, quality: Tensor, dtype: torch.dtype) -> Tensor:
    """What the teacher's g_s receives for x coded at `quality` without a caption: the latent rounded around the
    ChARM's means as compress rounds it (the latent codec in eval mode), times the inverse gains.

    The prior runs in float32 here, in float64 in the coder: a symbol exactly at a rounding tie may differ.
    """
    y = teacher.analyze(x, quality, None, None, dtype)
    y_hat = teacher.latent_codec(y)["y_hat"]
    return y_hat * teacher.gains.inv_gain(quality.to(y_hat.device))


@torch.no_grad()
def teacher_image(teacher: Architecture, g_s_input: Tensor, dtype: torch.dtype) -> Tensor:
    """The teacher's g_s on the decoded latent: the image the student learns to match, in float32 for the loss."""
    with _autocast(g_s_input.device, dtype):
        return teacher.g_s(g_s_input).float()


def build_student(M: int, widths: tuple[int, ...]) -> nn.Sequential:
    """A fresh light g_s for an M-channel latent, starting from grey images (light.start_near_grey)."""
    student = light_synthesis(M, widths)
    start_near_grey(student)
    return student


def g_s_macs(g_s: nn.Module, M: int) -> int:
    """conv_macs of g_s on a 768x512 image's latent, counted on a meta copy: shapes decide the count, so nothing
    is computed (v1's g_s would take seconds)."""
    meta = copy.deepcopy(g_s).to("meta")
    return conv_macs(meta, torch.zeros(1, M, *COST_LATENT, device="meta"))


def distill_loss(student: nn.Module, g_s_input: Tensor, x: Tensor, target: Tensor, alpha: float,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, MSE to the photo, MSE to the teacher's image) of the student on one batch."""
    with _autocast(x.device, dtype):
        out = student(g_s_input).float()
    to_photo, to_teacher = F.mse_loss(out, x), F.mse_loss(out, target)
    return to_photo + alpha * to_teacher, to_photo, to_teacher


@dataclass
class Reference:
    """One validation quality: the held-out crops' g_s inputs and the teacher's PSNR on them. The teacher never
    changes, so this is computed once per session, in float32 like the main run's validation."""

    inputs: list[Tensor]
    teacher_psnr: float


def references(teacher: Architecture, images: list[Tensor]) -> dict[str, Reference]:
    """The Reference of each validation quality ("q1", "q4", "q8") for the held-out crops."""
    out = {}
    for q in VAL_QUALITIES:
        quality = torch.full((1,), q)
        inputs = [decoded_latent(teacher, x, quality, torch.float32) for x in images]
        psnrs = [psnr(teacher_image(teacher, i, torch.float32), x) for i, x in zip(inputs, images, strict=True)]
        out[f"q{q:g}"] = Reference(inputs, sum(psnrs) / len(psnrs))
    return out


@torch.no_grad()
def validate_student(student: nn.Module, images: list[Tensor],
                     refs: dict[str, Reference]) -> dict[str, dict[str, float]]:
    """Per quality: the student's mean PSNR on the held-out crops (float32) and the teacher's on the same latents."""
    student.eval()
    result = {}
    for key, ref in refs.items():
        psnrs = [psnr(student(i), x) for i, x in zip(ref.inputs, images, strict=True)]
        result[key] = {"psnr": sum(psnrs) / len(psnrs), "teacher_psnr": ref.teacher_psnr}
    student.train()
    return result


class DistillRecord(RunRecord):
    """The main loop's run record (start line with machine kind and precision, bar, clock, checked atomic last.pt;
    it reads out, steps, batch_size and minutes of the config) with distillation's own lines."""

    def distilled(self, step: int, loss: Tensor, to_photo: Tensor, to_teacher: Tensor, skipped: int) -> None:
        if self._tick(step, loss=f"{loss.item():.5f}"):
            self._write({"step": step, "loss": loss.item(), "mse_photo": to_photo.item(),
                         "mse_teacher": to_teacher.item(), "steps_per_s": self._steps_per_s(), "skipped": skipped,
                         "train_seconds": self.train_seconds(), "time": time.time()})

    def student_validated(self, step: int, results: dict[str, dict[str, dict[str, float]]],
                          macs_vs_teacher: float) -> None:
        self._write({"step": step, **results, "macs_vs_teacher": macs_vs_teacher,
                     "train_seconds": self.train_seconds(), "time": time.time()})
        for key, rows in results.items():
            self.bar.write(f"step {step} {key} " + " ".join(f"{q}: {r['psnr']:.2f} dB (teacher {r['teacher_psnr']:.2f})"
                                                           for q, r in rows.items()))

    def save_student(self, step: int, student: nn.Module, optimizer: torch.optim.Optimizer,
                     average: AveragedModel | None, teacher_id: str) -> None:
        self.save_stage(step, student, {"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                                        "widths": list(self.cfg.widths), "teacher_id": teacher_id,
                                        "distill_config": json.dumps(vars(self.cfg))}, average)


def distill(cfg: DistillConfig) -> Path:
    """Train the student until cfg.steps (or cfg.minutes); returns the path of the last checkpoint."""
    state = open_stage(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve(cfg.precision, device)
    teacher, teacher_id = load_weights(Path(cfg.teacher))
    teacher.to(device).requires_grad_(False)
    M = teacher.config.M
    student = build_student(M, cfg.widths).to(device).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    last = last_checkpoint(cfg)  # (it reads cfg.out)
    if state is not None:
        if state["widths"] != list(cfg.widths) or state["teacher_id"] != teacher_id:
            raise ValueError(f"{last} distils widths {state['widths']} from teacher {state['teacher_id']}, not "
                             f"{list(cfg.widths)} from {teacher_id}: use another --out")
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
    average = weight_average(student, cfg.ema_decay, state.get("ema") if state else None)
    steps = FiniteSteps(optimizer, list(student.parameters()), cfg.clip_grad)
    step = int(state["step"]) if state else 0
    root = Path(cfg.data)
    train_paths, val_paths = split_holdout(list_images(root), cfg.val_images)
    crops = iter(CropStream(root, train_paths, {}, cfg.batch_size, cfg.crop, cfg.crop, 0.0, cfg.seed, step))
    if state is not None:  # after everything that draws from the RNG while it is built
        checkpoint.set_rng_state(state["rng"])
    val_images = [x.to(device) for x in validation_images(root, val_paths)] if cfg.val_every else []
    refs = references(teacher, val_images) if val_images else {}
    macs_vs_teacher = g_s_macs(student, M) / g_s_macs(teacher.g_s, M)
    run = DistillRecord(cfg, 0, 1, step, float(state["train_seconds"]) if state else 0.0, dtype)  # starts the clock
    while step < cfg.steps and time.time() < run.deadline:
        x = next(crops)[0].to(device)
        quality = random_qualities(x.shape[0])
        g_s_input = decoded_latent(teacher, x, quality, dtype)
        target = teacher_image(teacher, g_s_input, dtype)
        loss, to_photo, to_teacher = distill_loss(student, g_s_input, x, target, cfg.alpha, dtype)
        steps.step(loss, step)
        if average is not None:
            average.update_parameters(student)
        step += 1
        run.distilled(step, loss, to_photo, to_teacher, steps.skipped)
        if due(step, cfg.ckpt_every, cfg.steps):
            run.save_student(step, student, optimizer, average, teacher_id)
        if cfg.val_every and due(step, cfg.val_every, cfg.steps):
            results = {"val": validate_student(student, val_images, refs)}
            if average is not None:
                results["val_ema"] = validate_student(average.module, val_images, refs)
            run.student_validated(step, results, macs_vs_teacher)
    run.close()
    run.save_student(step, student, optimizer, average, teacher_id)
    return last


def parse_args(argv: list[str] | None = None) -> DistillConfig:
    """The run the command line asks for (argv: sys.argv[1:] when None); flags default to DistillConfig's."""
    p = argparse.ArgumentParser(prog="python -m selic_engine.training.distill",
                                description="Distil a lighter g_s from decoder v1's (issue 31, stage 1).")
    p.add_argument("--teacher", required=True, help="decoder v1 weights (.safetensors); only read")
    p.add_argument("--widths", type=int_tuple, default=LIGHT_SYNTHESIS_WIDTHS,
                   help=f"student channels at 1/16,1/8,1/4,1/2 (default {','.join(map(str, LIGHT_SYNTHESIS_WIDTHS))})")
    add_stage_flags(p, DistillConfig)
    add_flags(p, DistillConfig, {"alpha": float})
    return DistillConfig(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    print(distill(parse_args()))
