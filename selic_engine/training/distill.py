"""Decoder v2's synthesis stage (issue 31): a light g_s (model.light) trained on a frozen model's decoded latents.

Stage 1 distils a new light g_s from decoder v1's: the frozen teacher (weights, only read) encodes random training
crops at random qualities without a caption, rounds the latent as its decoder receives it and synthesises it. The
student learns from the same inverse-gained latent to give back the photo and the teacher's image:
loss = MSE(student, x) + alpha * MSE(student, teacher). The teacher's image is the easier target early on (it is a
function of the latent; the photo is not quite), the photo keeps the student from copying the teacher's errors.

With `--init teacher` the teacher is a selic-v2 model and the student starts as its own light g_s, trained further
on its frozen encoder's and entropy model's latents (alpha 0: the photo alone); training.assemble --base puts it
back. g_a and the prior are frozen, so with `--cache-crops N` each crop is coded (and the teacher's image made) only
once (training.crop_cache) and a step costs the student alone: the issue's g_s trained on (cached latent, crop).

    python -m selic_engine.training.distill --teacher WEIGHTS.safetensors --out RUN_DIR --steps N --threads T \\
        [--resume auto] [--batch-size 2] [--crop 256] [--lr 2e-4] [--alpha 1] [--widths 192,128,64,32] [--minutes M]
        [--init fresh|teacher] [--cache-crops N]

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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
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
from .crop_cache import CropCache, CropEntries, Field
from .data import CropStream, list_images, split_holdout
from .flags import add_flags, add_stage_flags, int_tuple
from .loop import due, random_qualities
from .optim import FiniteSteps
from .record import RunRecord, last_checkpoint, open_stage
from .validation import VAL_QUALITIES, psnr, validation_images

#: The latent of a 768x512 image (Kodak's size): where decoder costs are compared (issue 31).
COST_LATENT = (32, 48)


#: Where the student starts: a new light g_s at the config's widths, or the (selic-v2) teacher's own.
INITS = ("fresh", "teacher")


@dataclass(kw_only=True)
class DistillConfig(StageConfig):
    teacher: str  # weights (.safetensors), only read: decoder v1, or a selic-v2 model for --init teacher
    alpha: float = 1.0  # weight of MSE to the teacher's image, beside MSE to the photo (0: not made at all)
    widths: tuple[int, ...] = LIGHT_SYNTHESIS_WIDTHS  # the student's channels at 1/16, 1/8, 1/4, 1/2 (fresh)
    init: str = "fresh"  # one of INITS
    cache_crops: int = 0  # 0: every step codes new crops; N: N crops coded once, under out/crops


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


def build_or_copy_student(teacher: Architecture, cfg: DistillConfig) -> tuple[nn.Module, tuple[int, ...]]:
    """The student cfg.init asks for, trainable, with its widths."""
    if cfg.init == "fresh":
        return build_student(teacher.config.M, cfg.widths), cfg.widths
    if teacher.config.v2 is None:
        raise ValueError(f"--init teacher trains a selic-v2 teacher's light g_s; {cfg.teacher} is "
                         f"{teacher.config.architecture}")
    return copy.deepcopy(teacher.g_s).requires_grad_(True), teacher.config.v2.synthesis_widths


@torch.no_grad()
def lesson(teacher: Architecture, x: Tensor, quality: Tensor, alpha: float, dtype: torch.dtype) -> dict[str, Tensor]:
    """What the student learns from on crops x: its input (the decoded latent), the photo and, when alpha is not
    0, the teacher's image."""
    taught = {"g_s_input": decoded_latent(teacher, x, quality, dtype), "photo": x}
    if alpha:
        taught["teacher"] = teacher_image(teacher, taught["g_s_input"], dtype)
    return taught


class FreshLessons:
    """Each step codes the next batch of the crop stream (stage 1's session-15 run: no cache)."""

    def __init__(self, teacher: Architecture, crops: CropStream, cfg: DistillConfig, dtype: torch.dtype) -> None:
        self.teacher, self.crops, self.alpha, self.dtype = teacher, iter(crops), cfg.alpha, dtype

    def __call__(self, device: torch.device) -> dict[str, Tensor]:
        x = next(self.crops)[0].to(device)
        return lesson(self.teacher, x, random_qualities(x.shape[0]), self.alpha, self.dtype)

    def cached(self) -> None:
        """No cache: nothing to log."""


class CachedLessons:
    """Each step draws entries of a CropCache: float16 decoded latents (and teacher images), uint8 photos."""

    def __init__(self, teacher: Architecture, teacher_id: str, entries: CropEntries, cfg: DistillConfig,
                 dtype: torch.dtype) -> None:
        self.teacher, self.entries, self.cfg, self.dtype = teacher, entries, cfg, dtype
        side, M = cfg.crop // teacher.geometry.latent_stride, teacher.config.M
        fields: dict[str, Field] = {"g_s_input": ((M, side, side), np.float16),
                                    "photo": ((3, cfg.crop, cfg.crop), np.uint8)}
        if cfg.alpha:
            fields["teacher"] = ((3, cfg.crop, cfg.crop), np.float16)
        self.cache = CropCache(Path(cfg.out) / "crops", cfg.cache_crops, fields, entries.key(teacher_id, dtype))

    def compute(self, i: int) -> dict[str, np.ndarray]:
        x, quality = self.entries(i)
        device = next(self.teacher.parameters()).device
        taught = lesson(self.teacher, x.to(device), quality, self.cfg.alpha, self.dtype)
        taught["photo"] = taught["photo"].mul(255).round()  # the crops are 8-bit: stored exactly
        return {k: v[0].float().cpu().numpy() for k, v in taught.items()}

    def __call__(self, device: torch.device) -> dict[str, Tensor]:
        got = self.cache.get(self.cache.draw(self.cfg.batch_size), self.compute)
        got["photo"] = got["photo"].float().div_(255)
        return {k: v.float().to(device) for k, v in got.items()}

    def cached(self) -> int:
        """The entries filled so far (the log shows the cache filling)."""
        return self.cache.cached()


def distill_loss(student: nn.Module, taught: dict[str, Tensor], alpha: float,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
    """(loss, MSE to the photo, MSE to the teacher's image or None without one) of the student on one lesson."""
    x = taught["photo"]
    with _autocast(x.device, dtype):
        out = student(taught["g_s_input"]).float()
    to_photo = F.mse_loss(out, x)
    if "teacher" not in taught:
        return to_photo, to_photo, None
    to_teacher = F.mse_loss(out, taught["teacher"])
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

    def distilled(self, step: int, loss: Tensor, to_photo: Tensor, to_teacher: Tensor | None, skipped: int,
                  cached: int | None) -> None:
        if self._tick(step, loss=f"{loss.item():.5f}"):
            extra = {"mse_teacher": to_teacher.item()} if to_teacher is not None else {}
            if cached is not None:
                extra["cached"] = cached
            self._write({"step": step, "loss": loss.item(), "mse_photo": to_photo.item(), **extra,
                         "steps_per_s": self._steps_per_s(), "skipped": skipped,
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
    student, widths = build_or_copy_student(teacher, cfg)
    cfg = replace(cfg, widths=tuple(widths))  # what the checkpoint records and a resume checks
    student = student.to(device).train()
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
    if cfg.cache_crops:
        lessons: FreshLessons | CachedLessons = CachedLessons(
            teacher, teacher_id, CropEntries(root, train_paths, cfg.crop, cfg.seed), cfg, dtype)
    else:
        lessons = FreshLessons(teacher, CropStream(root, train_paths, {}, cfg.batch_size, cfg.crop, cfg.crop, 0.0,
                                                   cfg.seed, step), cfg, dtype)
    if state is not None:  # after everything that draws from the RNG while it is built
        checkpoint.set_rng_state(state["rng"])
    val_images = [x.to(device) for x in validation_images(root, val_paths)] if cfg.val_every else []
    refs = references(teacher, val_images) if val_images else {}
    macs_vs_teacher = g_s_macs(student, M) / g_s_macs(teacher.g_s, M)
    run = DistillRecord(cfg, 0, 1, step, float(state["train_seconds"]) if state else 0.0, dtype)  # starts the clock
    while step < cfg.steps and time.time() < run.deadline:
        loss, to_photo, to_teacher = distill_loss(student, lessons(device), cfg.alpha, dtype)
        steps.step(loss, step)
        if average is not None:
            average.update_parameters(student)
        step += 1
        run.distilled(step, loss, to_photo, to_teacher, steps.skipped, lessons.cached())
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
                                description="Train a light g_s on a frozen model's decoded latents: distilled "
                                            "from decoder v1's, or a v2 model's own (issue 31).")
    p.add_argument("--teacher", required=True,
                   help="weights (.safetensors), only read: decoder v1, or a selic-v2 model for --init teacher")
    p.add_argument("--init", choices=INITS, default="fresh",
                   help="fresh: a new light g_s at --widths; teacher: the selic-v2 teacher's own g_s, trained on")
    p.add_argument("--widths", type=int_tuple, default=LIGHT_SYNTHESIS_WIDTHS,
                   help=f"student channels at 1/16,1/8,1/4,1/2 (default {','.join(map(str, LIGHT_SYNTHESIS_WIDTHS))})")
    add_stage_flags(p, DistillConfig)
    add_flags(p, DistillConfig, {"alpha": float, "cache_crops": int})
    return DistillConfig(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    print(distill(parse_args()))
