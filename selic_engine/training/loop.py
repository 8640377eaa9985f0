"""The training loop: variable-rate R + lambda*255^2*MSE, Adam, clipping, resumable checkpoints, DDP."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import QUALITY_MAX, QUALITY_MIN, ModelConfig, TrainConfig, preset
from ..model import SelicModel
from ..model.gain import lambda_for
from ..precision import cpu_has_native_bf16, machine_kind, resolve
from ..weights import ENCODER_MODULES, shipped_weights_path
from ..weights.files import load_weights, read_metadata
from . import checkpoint
from .averaging import weight_average
from .captions import embed_captions
from .data import CropStream, list_images, load_rgb, read_captions, split_holdout
from .widen import widen, widenable

VAL_QUALITIES = (1.0, 4.0, 8.0)
MAX_BAD_STEPS = 50  # consecutive steps with non-finite gradients before training gives up


def rd_loss(out: dict, x: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample bpp and MSE; loss = mean(bpp + lambda * 255^2 * mse)."""
    pixels = x.shape[-2] * x.shape[-1]
    bpp = sum(-torch.log2(v).flatten(1).sum(1) for v in out["likelihoods"].values()) / pixels
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    loss = (bpp + lam.to(x.device) * 255**2 * mse).mean()
    return loss, bpp.detach(), mse.detach()


def encoder_embeddings(cfg: TrainConfig, captions: dict[str, list[str]]) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Caption vectors from cfg.embedder: "minilm", "bert", a model folder, or "hook" (the selic_embed_text
    plugins, cached under selic_text_embedder_info's name)."""
    from ..semantic import training_embedder

    name, embed = training_embedder(cfg.embedder)
    return embed_captions(captions, name, embed)


def adapter_config(state: dict | None, init: SelicModel | None, text_dim: int) -> ModelConfig:
    """--adapter: the config of the model being adapted, with the new embedder's text dimension.

    Only the encoder side (fusion included) depends on text_dim, so the decoder and the model id do not change.
    """
    if state is not None:
        return ModelConfig.from_json(state["config"]).replace(text_dim=text_dim)
    if init is None:
        raise ValueError("--adapter adapts a trained model: pass --init-weights MODEL.safetensors (or --resume)")
    return init.config.replace(text_dim=text_dim)


def load_for_adapter(model: SelicModel, state: dict[str, torch.Tensor]) -> None:
    """Load trained weights into a model whose text dimension may differ: the fusion tensors shaped by it start
    fresh; any other mismatch still raises (entropy tables are resized by compressai's load_state_dict)."""
    own = model.state_dict()
    fresh = {k for k, v in state.items() if k.startswith("fusion.") and k in own and own[k].shape != v.shape}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    if set(result.missing_keys) != fresh or result.unexpected_keys:
        raise ValueError(f"weights do not match the model: missing {result.missing_keys}, "
                         f"unexpected {result.unexpected_keys}")


@torch.no_grad()
def validate(model: SelicModel, images: list[torch.Tensor]) -> dict[str, dict[str, float]]:
    """Estimated bpp (rounded latents, model likelihoods) and PSNR on held-out images, per quality."""
    model.eval()
    autocast, model.transform_autocast = model.transform_autocast, None  # measure what the codec will do
    result = {}
    for q in VAL_QUALITIES:
        bpps, psnrs = [], []
        for x in images:
            out = model(x, torch.full((1,), q))
            _, bpp, mse = rd_loss(out, x, torch.zeros(1))
            mse_q = (out["x_hat"].clamp(0, 1) - x).pow(2).mean()
            bpps.append(bpp.item())
            psnrs.append(-10 * math.log10(max(mse_q.item(), 1e-10)))
        result[f"q{q:g}"] = {"bpp": sum(bpps) / len(bpps), "psnr": sum(psnrs) / len(psnrs)}
    model.transform_autocast = autocast
    model.train()
    return result


def _val_images(root: Path, paths: list[str]) -> list[torch.Tensor]:
    out = []
    for p in paths:
        img = load_rgb(root / p)
        w, h = img.size
        s = 256
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()[None].float() / 255)
    return out


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def train(cfg: TrainConfig) -> Path:
    """Run until cfg.steps; returns the path of the last checkpoint."""
    rank, world, device = _distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    out_dir = Path(cfg.out)
    last = out_dir / "last.pt"
    root = Path(cfg.data)
    captions = read_captions(Path(cfg.captions) if cfg.captions else root / "captions.tsv")
    matrix, caption_ids = encoder_embeddings(cfg, captions)
    embeddings = torch.from_numpy(matrix)

    model_cfg = preset(cfg.preset)
    resume = cfg.resume
    if resume == "auto":
        resume = str(last) if last.exists() else ""
        if not resume and not cfg.init_weights and shipped_weights_path(model_cfg.name).exists():
            cfg.init_weights = str(shipped_weights_path(model_cfg.name))
    state = checkpoint.load(Path(resume)) if resume else None
    loaded = load_weights(Path(cfg.init_weights))[0] if state is None and cfg.init_weights else None
    if cfg.adapter:
        model_cfg = adapter_config(state, loaded, embeddings.shape[1])
    model = SelicModel(model_cfg)
    if state is not None:
        if state["config"] != model_cfg.to_json():
            raise ValueError(f"checkpoint {resume} was trained with another model config")
        model.load_state_dict(state["model"])
    elif loaded is not None and cfg.adapter:
        load_for_adapter(model, loaded.state_dict())
    elif loaded is not None and loaded.config != model_cfg and widenable(loaded.config, model_cfg):
        model = widen(loaded, model_cfg, cfg.seed)  # a wider preset starts from what the narrower one learned
    elif loaded is not None:
        if loaded.config != model_cfg:
            raise ValueError(f"{cfg.init_weights} holds config {loaded.config.name!r}, not preset {cfg.preset!r}")
        model.load_state_dict(loaded.state_dict())
    if model_cfg.text_dim != embeddings.shape[1]:
        raise ValueError(f"embedder gives {embeddings.shape[1]}-d vectors, model expects {model_cfg.text_dim}; "
                         "train an encoder adapter for it with --adapter")
    model.to(device).train()
    dtype = resolve(cfg.precision, device)
    model.transform_autocast = dtype if dtype != torch.float32 else None
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("--precision bfloat16 on a CPU without AVX512-BF16/AMX: bfloat16 is emulated and much "
                      "slower than float32 here; use --precision auto", stacklevel=1)

    if cfg.adapter:
        for name, p in model.named_parameters():
            p.requires_grad_(name.split(".", 1)[0] in ENCODER_MODULES)
    net_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and not cfg.adapter]
    optimizer = torch.optim.Adam(net_params, lr=cfg.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else None
    # Steps count across sessions: weights exported by `selic export` record the step they reached.
    history = read_metadata(Path(cfg.init_weights)) if loaded is not None and not cfg.adapter else {}
    step = int(history.get("step", 0))
    seconds_before = float(history.get("train_seconds", 0))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if aux_optimizer is not None and "aux_optimizer" in state:
            aux_optimizer.load_state_dict(state["aux_optimizer"])
        step = int(state["step"])
        seconds_before = float(state.get("train_seconds", 0))
    if world > 1:
        # quantiles only get gradients from the aux loss, run outside DDP's forward; every rank computes the same
        # aux gradient from identical weights, so they stay in step without the reducer.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, [n for n, _ in model.named_parameters() if n.endswith(".quantiles")])
    ddp = DistributedDataParallel(model) if world > 1 else model
    average = weight_average(model, cfg.ema_decay, state.get("ema") if state is not None else None)

    train_paths, val_paths = split_holdout(list_images(root), cfg.val_images)
    stream = CropStream(root, train_paths, caption_ids, cfg.batch_size, cfg.crop, cfg.min_crop,
                        cfg.caption_dropout, cfg.seed, start_step=step)
    loader = iter(DataLoader(stream, batch_size=None, num_workers=cfg.workers,
                             persistent_workers=cfg.workers > 0, prefetch_factor=4 if cfg.workers else None))
    val_images = _val_images(root, val_paths) if rank == 0 else []
    log = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        log = open(out_dir / "log.jsonl", "a")
        log.write(json.dumps({"step": step, "start": {"machine": machine_kind(), "precision": str(dtype),
                                                      "threads": torch.get_num_threads(), "world": world,
                                                      "train_config": vars(cfg)}, "time": time.time()}) + "\n")

    def save_checkpoint() -> None:
        if rank:
            return
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise FloatingPointError(f"non-finite weights at step {step}: the previous checkpoint is kept")
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                   "rng": checkpoint.rng_state(), "config": model_cfg.to_json(), "train_config": json.dumps(vars(cfg)),
                   "train_seconds": seconds_before + time.time() - t0}
        if aux_optimizer is not None:
            payload["aux_optimizer"] = aux_optimizer.state_dict()
        if average is not None:
            payload["ema"] = average.state_dict()
        checkpoint.save(last, payload)

    if state is not None:  # last: building the DataLoader iterator draws from the torch RNG
        checkpoint.set_rng_state(state["rng"])
    bar = tqdm(total=cfg.steps, initial=step, disable=rank != 0, unit="step", smoothing=0.05,
               mininterval=0.1 if sys.stderr.isatty() else 60)  # a log file gets a line a minute
    t0 = time.time()
    deadline = t0 + 60 * cfg.minutes if cfg.minutes else math.inf
    bad_steps = skipped = 0
    while step < cfg.steps and time.time() < deadline:
        lr = cfg.lr * (0.1 if cfg.lr_decay_at and step >= cfg.lr_decay_at else 1.0)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x, ids, has_caption = next(loader)
        x = x.to(device)
        quality = QUALITY_MIN + torch.rand(x.shape[0]) * (QUALITY_MAX - QUALITY_MIN)
        lam = lambda_for(quality, model_cfg.lambdas)
        out = ddp(x, quality, embeddings[ids].to(device), has_caption.to(device))
        loss, bpp, mse = rd_loss(out, x, lam)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net_params, cfg.clip_grad or math.inf)
        if torch.isfinite(grad_norm):  # (the same on every DDP rank: the gradients are all-reduced)
            optimizer.step()
            bad_steps = 0
        else:  # one bad batch (a NaN or inf anywhere) must not poison the weights, their average and checkpoints
            bad_steps += 1
            skipped += 1
            if bad_steps > MAX_BAD_STEPS:
                raise FloatingPointError(f"{bad_steps} steps in a row had non-finite gradients (step {step}): "
                                         "lower --lr, or resume from the last checkpoint")
        if aux_optimizer is not None:
            aux_optimizer.zero_grad(set_to_none=True)
            model.aux_loss().backward()
            aux_optimizer.step()
        if average is not None:
            average.update_parameters(model)
        step += 1
        bar.update(1)
        if rank == 0:
            bar.set_postfix(refresh=False, loss=f"{loss.item():.3f}", bpp=f"{bpp.mean().item():.3f}",
                            img_s=f"{cfg.batch_size * world * (bar.n - bar.initial) / (time.time() - t0):.1f}")
            if step % 50 == 0:
                log.write(json.dumps({"step": step, "loss": loss.item(), "bpp": bpp.mean().item(),
                                      "mse": mse.mean().item(), "lr": lr, "time": time.time(),
                                      "steps_per_s": (bar.n - bar.initial) / (time.time() - t0),
                                      "skipped": skipped}) + "\n")
                log.flush()
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save_checkpoint()
            if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
                v = validate(model, val_images)
                record = {"step": step, "val": v, "time": time.time()}
                if average is not None:
                    record["val_ema"] = validate(average.module, val_images)
                log.write(json.dumps(record) + "\n")
                log.flush()
                for key in ("val", "val_ema"):
                    rows = record.get(key, {}).items()
                    if rows:
                        bar.write(f"step {step} {key} " + " ".join(f"{k}: {r['bpp']:.3f} bpp {r['psnr']:.2f} dB"
                                                                  for k, r in rows))
    bar.close()
    if log is not None:
        log.close()
    save_checkpoint()
    if dist.is_initialized():
        check_replicas(model, out_dir, rank, world)
    return last


def check_replicas(model: SelicModel, out_dir: Path, rank: int, world: int) -> None:
    """DDP must keep every replica identical; gather a weights checksum from each rank and record them."""
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    digests: list[str | None] = [None] * world
    dist.all_gather_object(digests, digest)
    if rank == 0:
        (out_dir / "replicas.json").write_text(json.dumps(digests))
    if len(set(digests)) != 1:
        raise RuntimeError(f"DDP replicas diverged: {digests}")

