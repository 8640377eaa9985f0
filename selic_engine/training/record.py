"""What a run writes while it trains: the progress bar, log.jsonl and the resumable checkpoint last.pt.

Only rank 0 writes; on the other ranks the bar is disabled and every write does nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from ..config import StageConfig
from ..model import Architecture
from ..precision import machine_kind
from . import checkpoint
from .optim import Optimizers

LOG_EVERY = 50  # steps between log.jsonl lines


def last_checkpoint(cfg: StageConfig) -> Path:
    """The checkpoint every session rewrites, and the one `--resume auto` resumes."""
    return Path(cfg.out) / "last.pt"


def open_stage(cfg: StageConfig) -> dict[str, Any] | None:
    """The start of a training stage (distill, entropy_stage): threads and seed set from cfg; returns last.pt's
    contents when cfg.resume is "auto" and it exists (None: a fresh start)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    last = last_checkpoint(cfg)
    return checkpoint.load(last) if cfg.resume == "auto" and last.exists() else None


class RunRecord:
    """One session of a run: opening it logs the machine and config and starts the clock that `train_seconds`
    (carried across sessions in the checkpoint) and the rates count from."""

    def __init__(self, cfg: StageConfig, rank: int, world: int, step: int, train_seconds: float,
                 precision: torch.dtype) -> None:
        self.cfg, self.rank, self.world = cfg, rank, world
        self.out_dir = Path(cfg.out)
        self.seconds_before = train_seconds
        self.log = None
        if rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.log = open(self.out_dir / "log.jsonl", "a")
            self._write({"step": step, "start": {"machine": machine_kind(), "precision": str(precision),
                                                 "threads": torch.get_num_threads(), "world": world,
                                                 "train_config": vars(cfg)}, "time": time.time()})
        self.bar = tqdm(total=cfg.steps, initial=step, disable=rank != 0, unit="step", smoothing=0.05,
                        mininterval=0.1 if sys.stderr.isatty() else 60)  # a log file gets a line a minute
        self.t0 = time.time()
        self.deadline = self.t0 + 60 * cfg.minutes if cfg.minutes else math.inf

    def _write(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def _steps_per_s(self) -> float:
        return (self.bar.n - self.bar.initial) / (time.time() - self.t0)

    def train_seconds(self) -> float:
        """Training wall time of the whole run so far, earlier sessions included."""
        return self.seconds_before + time.time() - self.t0

    def _tick(self, step: int, **postfix: str) -> bool:
        """Advance the bar and show postfix and the image rate under it; True when this step's log line is due."""
        self.bar.update(1)
        if self.rank:
            return False
        self.bar.set_postfix(refresh=False, **postfix,
                             img_s=f"{self.cfg.batch_size * self.world * self._steps_per_s():.1f}")
        return step % LOG_EVERY == 0

    def stepped(self, step: int, loss: torch.Tensor, bpp: torch.Tensor, mse: torch.Tensor, lr: float,
                skipped: int) -> None:
        """After each step: the bar, and every LOG_EVERY steps a log line."""
        if self._tick(step, loss=f"{loss.item():.3f}", bpp=f"{bpp.mean().item():.3f}"):
            self._write({"step": step, "loss": loss.item(), "bpp": bpp.mean().item(), "mse": mse.mean().item(),
                         "lr": lr, "time": time.time(), "steps_per_s": self._steps_per_s(), "skipped": skipped})

    def validated(self, step: int, results: dict[str, dict[str, dict[str, float]]]) -> None:
        """Log validation results (see validation.validate_run) and show them under the bar."""
        self._write({"step": step, **results, "train_seconds": self.train_seconds(), "time": time.time()})
        for key, rows in results.items():
            if rows:
                self.bar.write(f"step {step} {key} " + " ".join(
                    f"{k}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB (ceiling {r['ceiling_psnr']:.2f})"
                    for k, r in rows.items()))

    def save(self, step: int, model: Architecture, optimizers: Optimizers, average: AveragedModel | None) -> None:
        """Write last.pt: everything an exact resume needs. Non-finite weights are refused, keeping the previous
        checkpoint."""
        if self.rank:
            return
        payload = {"model": model.state_dict(), **optimizers.state_dict(), "step": step,
                   "rng": checkpoint.rng_state(), "config": model.config.to_json(),
                   "train_config": json.dumps(vars(self.cfg))}
        if average is not None:
            payload["ema"] = average.state_dict()
        self.write_checkpoint(step, model, payload)

    def save_stage(self, step: int, module: nn.Module, payload: dict[str, Any], average: AveragedModel | None) -> None:
        """A training stage's last.pt (distill, entropy_stage): its payload with the step, the RNG state and the
        weight average (when kept), as write_checkpoint writes it."""
        payload = {**payload, "step": step, "rng": checkpoint.rng_state()}
        if average is not None:
            payload["ema"] = average.state_dict()
        self.write_checkpoint(step, module, payload)

    def write_checkpoint(self, step: int, model: nn.Module, payload: dict[str, Any]) -> None:
        """Write payload and the training seconds to last.pt atomically, unless model's weights are not finite
        (then the previous checkpoint is kept)."""
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise FloatingPointError(f"non-finite weights at step {step}: the previous checkpoint is kept")
        checkpoint.save(last_checkpoint(self.cfg), {**payload, "train_seconds": self.train_seconds()})

    def close(self) -> None:
        self.bar.close()
        if self.log is not None:
            self.log.close()
