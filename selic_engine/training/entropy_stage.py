"""Decoder v2, stage 2 (issue 31): the stronger entropy model (entropy.elic) trained on cached latents of decoder v1.

With v1's g_a and fusion frozen (weights only read, no caption), a crop's latent never changes, so each training
crop is encoded once, at a random quality, into a bounded on-disk cache in the run folder (training.crop_cache:
float16 latents and their qualities, filled the first time a step draws an entry).
The new entropy model then trains on rate alone (-log2 likelihood of the noisy latent and its hyper-latent, per
pixel) at a small fraction of a full step's cost: no g_a, no g_s, no image.

    python -m selic_engine.training.entropy_stage --weights V1.safetensors --out RUN_DIR --steps N --threads T \\
        [--resume auto] [--batch-size 8] [--crop 256] [--cache-crops 4096] [--groups 16,16,32,64] [--nz 128] ...

It reuses the main loop's parts: its crops and 12-image hold-out (training.data), its quality draws, NaN-step
skipping, weight average, run record (log.jsonl, the atomic last.pt) and exact resume. Each validation logs, per
quality, the estimated bits per pixel of the new model (and of its average) and of v1's own hyperprior + ChARM on
the same held-out latents, with the training seconds, so that the gain per CPU-hour can be read off the log.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from ..config import ElicConfig, StageConfig
from ..entropy.elic import ElicCodec
from ..model import Architecture
from ..model.selic_v2 import elic_latent_codec
from ..precision import resolve
from ..weights.files import load_weights
from . import checkpoint
from .averaging import weight_average
from .crop_cache import CropCache, CropEntries
from .data import list_images, split_holdout
from .flags import add_flags, add_stage_flags, int_tuple
from .loop import due
from .loss import bits_per_pixel
from .optim import FiniteSteps
from .record import RunRecord, last_checkpoint, open_stage
from .validation import VAL_QUALITIES, validation_images


@dataclass(kw_only=True)
class EntropyStageConfig(StageConfig):
    weights: str  # decoder v1 weights (.safetensors): g_a and fusion encode the cache, v1's prior is the reference
    batch_size: int = 8
    lr: float = 1e-4
    val_every: int = 500
    ckpt_every: int = 500
    cache_crops: int = 4096  # crops in the cache (under out/latents): 2 * M * (crop/16)^2 bytes each
    aux_lr: float = 1e-3  # the hyper-latent prior's quantiles (compressai's aux loss)
    groups: tuple[int, ...] = ElicConfig.groups  # the new model (config.ElicConfig): () is ELIC's groups for M
    nz: int = ElicConfig.Nz
    hyper_hidden: int = ElicConfig.hyper_hidden
    param_hidden: int = ElicConfig.param_hidden
    context_hidden: int = ElicConfig.context_hidden

    def model(self) -> ElicConfig:
        return ElicConfig(self.groups, self.nz, self.hyper_hidden, self.param_hidden, self.context_hidden)


class LatentEncoder:
    """Entry i of the cache: v1's gained latent (no caption) of crop i at its quality, with that quality."""

    def __init__(self, v1: Architecture, entries: CropEntries, dtype: torch.dtype) -> None:
        self.v1, self.entries, self.dtype = v1, entries, dtype

    @torch.no_grad()
    def __call__(self, i: int) -> dict[str, np.ndarray]:
        x, quality = self.entries(i)
        y = self.v1.analyze(x, quality, None, None, self.dtype)[0].float()
        return {"latents": y.numpy(), "qualities": quality.numpy()[0]}


@dataclass
class HeldOut:
    """One validation quality: the held-out crops' latents (float32, no caption, one batch), the pixels of one
    crop and v1's own estimated bits per pixel on them (its hyperprior and ChARM): the reference, computed once."""

    latents: Tensor
    pixels: int
    v1_bpp: float


@torch.no_grad()
def held_out_latents(v1: Architecture, images: list[Tensor]) -> dict[str, HeldOut]:
    """The HeldOut of each validation quality ("q1", "q4", "q8")."""
    out = {}
    for q in VAL_QUALITIES:
        y = torch.cat([v1.analyze(x, torch.full((1,), q), None, None, torch.float32) for x in images])
        pixels = images[0].shape[-2] * images[0].shape[-1]
        out[f"q{q:g}"] = HeldOut(y, pixels, latent_bpp(v1.latent_codec, y, pixels))
    return out


@torch.no_grad()
def latent_bpp(codec: nn.Module, y: Tensor, pixels: int) -> float:
    """Mean estimated bits per pixel of a latent codec on latents y (B, M, h, w) of images of `pixels` pixels, in
    eval mode (rounded latents, as coded)."""
    training = codec.training
    codec.eval()
    bpp = bits_per_pixel(codec(y)["likelihoods"], pixels).mean().item()
    codec.train(training)
    return bpp


def validate_codec(codec: nn.Module, held_out: dict[str, HeldOut]) -> dict[str, dict[str, float]]:
    """Per quality: the new model's bits per pixel on the held-out latents and v1's on the same."""
    return {key: {"bpp": latent_bpp(codec, h.latents, h.pixels), "v1_bpp": h.v1_bpp} for key, h in held_out.items()}


class EntropyRecord(RunRecord):
    """The main loop's run record (it reads out, steps, batch_size and minutes of the config) with this stage's
    lines: rate and steps/s, cache fill, and validations against v1."""

    def rated(self, step: int, bpp: Tensor, skipped: int, cached: int) -> None:
        if self._tick(step, bpp=f"{bpp.item():.4f}"):
            self._write({"step": step, "bpp": bpp.item(), "steps_per_s": self._steps_per_s(), "skipped": skipped,
                         "cached": cached, "train_seconds": self.train_seconds(), "time": time.time()})

    def codec_validated(self, step: int, results: dict[str, dict[str, dict[str, float]]]) -> None:
        self._write({"step": step, **results, "train_seconds": self.train_seconds(), "time": time.time()})
        for key, rows in results.items():
            self.bar.write(f"step {step} {key} " + " ".join(f"{q}: {r['bpp']:.4f} bpp (v1 {r['v1_bpp']:.4f})"
                                                           for q, r in rows.items()))

    def save_codec(self, step: int, codec: ElicCodec, optimizer: torch.optim.Optimizer,
                   aux: torch.optim.Optimizer, average: AveragedModel | None, teacher_id: str) -> None:
        self.save_stage(step, codec, {"codec": codec.state_dict(), "optimizer": optimizer.state_dict(),
                                      "aux_optimizer": aux.state_dict(), "teacher_id": teacher_id,
                                      "elic_config": json.dumps(asdict(self.cfg.model())),
                                      "stage_config": json.dumps(vars(self.cfg))}, average)


def train_entropy(cfg: EntropyStageConfig) -> Path:
    """Train the new entropy model until cfg.steps (or cfg.minutes); returns the path of the last checkpoint."""
    state = open_stage(cfg)
    dtype = resolve(cfg.precision, "cpu")
    v1, teacher_id = load_weights(Path(cfg.weights))
    v1.requires_grad_(False)
    M = v1.config.M
    codec = elic_latent_codec(M, cfg.model()).train()
    aux_params = codec.aux_parameters()
    params = [p for p in codec.parameters() if all(p is not a for a in aux_params)]
    optimizer, aux = torch.optim.Adam(params, lr=cfg.lr), torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    last = last_checkpoint(cfg)  # (it reads cfg.out)
    if state is not None:
        if state["elic_config"] != json.dumps(asdict(cfg.model())) or state["teacher_id"] != teacher_id:
            raise ValueError(f"{last} trains {state['elic_config']} on the latents of {state['teacher_id']}, not "
                             f"{asdict(cfg.model())} on {teacher_id}: use another --out")
        codec.load_state_dict(state["codec"])
        optimizer.load_state_dict(state["optimizer"])
        aux.load_state_dict(state["aux_optimizer"])
    average = weight_average(codec, cfg.ema_decay, state.get("ema") if state else None)
    steps = FiniteSteps(optimizer, params, cfg.clip_grad)
    step = int(state["step"]) if state else 0
    root = Path(cfg.data)
    train_paths, val_paths = split_holdout(list_images(root), cfg.val_images)
    side = cfg.crop // v1.geometry.latent_stride
    entries = CropEntries(root, train_paths, cfg.crop, cfg.seed)
    cache = CropCache(Path(cfg.out) / "latents", cfg.cache_crops,
                      {"latents": ((M, side, side), np.float16), "qualities": ((), np.float32)},
                      entries.key(teacher_id, dtype))
    encode = LatentEncoder(v1, entries, dtype)
    if state is not None:  # after everything that draws from the RNG while it is built
        checkpoint.set_rng_state(state["rng"])
    held_out = held_out_latents(v1, validation_images(root, val_paths)) if cfg.val_every else {}
    run = EntropyRecord(cfg, 0, 1, step, float(state["train_seconds"]) if state else 0.0, dtype)  # starts the clock
    pixels = cfg.crop * cfg.crop
    while step < cfg.steps and time.time() < run.deadline:
        y = cache.get(cache.draw(cfg.batch_size), encode)["latents"].float()
        bpp = bits_per_pixel(codec(y)["likelihoods"], pixels).mean()
        steps.step(bpp, step)
        aux.zero_grad(set_to_none=True)
        codec.entropy_bottleneck.loss().backward()
        aux.step()
        if average is not None:
            average.update_parameters(codec)
        step += 1
        run.rated(step, bpp, steps.skipped, cache.cached())
        if due(step, cfg.ckpt_every, cfg.steps):
            run.save_codec(step, codec, optimizer, aux, average, teacher_id)
        if cfg.val_every and due(step, cfg.val_every, cfg.steps):
            results = {"val": validate_codec(codec, held_out)}
            if average is not None:
                results["val_ema"] = validate_codec(average.module, held_out)
            run.codec_validated(step, results)
    run.close()
    run.save_codec(step, codec, optimizer, aux, average, teacher_id)
    return last


def parse_args(argv: list[str] | None = None) -> EntropyStageConfig:
    """The run the command line asks for (argv: sys.argv[1:] when None); flags default to EntropyStageConfig's."""
    p = argparse.ArgumentParser(prog="python -m selic_engine.training.entropy_stage",
                                description="Train decoder v2's entropy model on cached v1 latents (issue 31, "
                                            "stage 2).")
    p.add_argument("--weights", required=True, help="decoder v1 weights (.safetensors); only read")
    p.add_argument("--groups", type=int_tuple, default=EntropyStageConfig.groups,
                   help="channels per group, summing to M (default: ELIC's 16,16,32,64,M-128)")
    add_stage_flags(p, EntropyStageConfig)
    add_flags(p, EntropyStageConfig, {"cache_crops": int, "aux_lr": float, "nz": int, "hyper_hidden": int,
                                      "param_hidden": int, "context_hidden": int})
    return EntropyStageConfig(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    print(train_entropy(parse_args()))
