"""The training loop: variable-rate R + lambda*255^2*MSE, Adam, clipping, resumable checkpoints, DDP.

`train` is the outline. How the model starts is in start.py, the optimisers in optim.py, what the run writes
(bar, log.jsonl, last.pt) in record.py, validation in validation.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..config import QUALITY_MAX, QUALITY_MIN, Precision, TrainConfig
from ..model import Architecture
from ..model.gain import lambda_for
from ..precision import cpu_has_native_bf16, resolve
from . import checkpoint
from .averaging import weight_average
from .captions import embed_captions
from .data import CropStream, list_images, read_captions, split_holdout
from .loss import rd_loss
from .optim import Optimizers
from .record import RunRecord, last_checkpoint
from .start import start, with_shipped_weights
from .validation import validate_run, validation_images

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # crops, caption row ids, has-caption flags


def train(cfg: TrainConfig) -> Path:
    """Run until cfg.steps (or cfg.minutes of training); returns the path of the last checkpoint."""
    rank, world, device = _distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    root, last = Path(cfg.data), last_checkpoint(cfg)
    embeddings, caption_ids = caption_vectors(cfg)
    cfg = with_shipped_weights(cfg, last)
    begin = start(cfg, embeddings.shape[1], last)
    model = begin.model
    dtype = _place(model, device, cfg.precision)
    optimizers = Optimizers(model, cfg)
    if begin.checkpoint is not None:
        optimizers.load_state_dict(begin.checkpoint)
    forward = _data_parallel(model, world)
    average = weight_average(model, cfg.ema_decay, begin.checkpoint.get("ema") if begin.checkpoint else None)
    train_paths, val_paths = split_holdout(list_images(root), cfg.val_images)
    batches = _batches(cfg, root, train_paths, caption_ids, begin.step)
    val_images = validation_images(root, val_paths) if rank == 0 else []
    if begin.checkpoint is not None:  # last: building the DataLoader iterator draws from the torch RNG
        checkpoint.set_rng_state(begin.checkpoint["rng"])
    run = RunRecord(cfg, rank, world, begin.step, begin.train_seconds, dtype)
    step = begin.step
    while step < cfg.steps and time.time() < run.deadline:
        lr = optimizers.set_lr(step)
        loss, bpp, mse = _train_step(forward, model, optimizers, next(batches), embeddings, device, step)
        if average is not None:
            average.update_parameters(model)
        step += 1
        run.stepped(step, loss, bpp, mse, lr, optimizers.skipped)
        if due(step, cfg.ckpt_every, cfg.steps):
            run.save(step, model, optimizers, average)
        if rank == 0 and cfg.val_every and due(step, cfg.val_every, cfg.steps):
            run.validated(step, validate_run(model, average, val_images))
    run.close()
    run.save(step, model, optimizers, average)
    if dist.is_initialized():
        check_replicas(model, Path(cfg.out), rank, world)
    return last


def _train_step(forward: nn.Module, model: Architecture, optimizers: Optimizers, batch: Batch,
                embeddings: torch.Tensor, device: torch.device,
                step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step on a batch, each sample at a random quality (and so its own lambda); returns (loss, bpp, mse)."""
    x, ids, has_caption = batch
    x = x.to(device)
    quality = random_qualities(x.shape[0])
    lam = lambda_for(quality, model.config.lambdas)
    out = forward(x, quality, embeddings[ids].to(device), has_caption.to(device))
    loss, bpp, mse = rd_loss(out, x, lam)
    optimizers.step(loss, step)
    return loss, bpp, mse


def random_qualities(count: int) -> torch.Tensor:
    """One quality per sample, uniform over the whole range (fractional ones included), from torch's RNG: one model
    learns every rate, and a resumed run draws the same ones."""
    return QUALITY_MIN + torch.rand(count) * (QUALITY_MAX - QUALITY_MIN)


def due(step: int, every: int, last_step: int) -> bool:
    """Every `every` steps, and at the last one."""
    return step % every == 0 or step == last_step


def caption_vectors(cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, list[int]]]:
    """The caption vectors (one row per distinct caption) and each photo's rows, from cfg.embedder: "minilm",
    "bert", a model folder, or "hook" (the selic_embed_text plugins, cached under selic_text_embedder_info's
    name)."""
    from ..semantic import training_embedder

    captions = read_captions(Path(cfg.captions) if cfg.captions else Path(cfg.data) / "captions.tsv")
    name, embed = training_embedder(cfg.embedder)
    matrix, ids = embed_captions(captions, name, embed)
    return torch.from_numpy(matrix), ids


def _place(model: Architecture, device: torch.device, precision: Precision) -> torch.dtype:
    """Move the model to the device in training mode, with g_a / g_s in `precision`; returns that dtype."""
    model.to(device).train()
    dtype = resolve(precision, device)
    model.transform_autocast = dtype if dtype != torch.float32 else None
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("--precision bfloat16 on a CPU without AVX512-BF16/AMX: bfloat16 is emulated and much "
                      "slower than float32 here; use --precision auto", stacklevel=1)
    return dtype


def _batches(cfg: TrainConfig, root: Path, paths: list[str], caption_ids: dict[str, list[int]],
             step: int) -> Iterator[Batch]:
    """The training batches from `step` on (the crop stream is a function of the step, so a resume continues it)."""
    stream = CropStream(root, paths, caption_ids, cfg.batch_size, cfg.crop, cfg.min_crop, cfg.caption_dropout,
                        cfg.seed, start_step=step)
    return iter(DataLoader(stream, batch_size=None, num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
                           prefetch_factor=4 if cfg.workers else None))


def _distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; one CPU or GPU process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _data_parallel(model: Architecture, world: int) -> nn.Module:
    """The model under DDP when there are several processes, else itself."""
    if world == 1:
        return model
    # the aux parameters (quantiles) only get gradients from the aux loss, run outside DDP's forward; every rank
    # computes the same aux gradient from identical weights, so they stay in step without the reducer.
    aux = model.latent_codec.aux_parameters()
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, [n for n, p in model.named_parameters() if any(p is a for a in aux)])
    return DistributedDataParallel(model)


def check_replicas(model: Architecture, out_dir: Path, rank: int, world: int) -> None:
    """DDP must keep every replica identical; gather a weights checksum from each rank and record them."""
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    digests: list[str | None] = [None] * world
    dist.all_gather_object(digests, digest)
    if rank == 0:
        (out_dir / "replicas.json").write_text(json.dumps(digests))
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP replicas diverged: {digests}")
