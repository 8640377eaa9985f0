"""Where the quality ceiling is: the transforms, the quantization, or the number of latent channels?

    python -m benchmarks.ceiling [--models small /path/other.safetensors] [--source validation] [--images 8]

For each model and quality, images go through g_a and g_s with the latent quantized as the codec
does (rounding around the ChARM means), with a 2x and 4x finer quantization step, and not quantized
at all. If PSNR barely moves from the coded latent to the unquantized one, more bits cannot help:
only better transforms can. Two more columns ask whether the number of latent channels M binds:
the unquantized latent with only the channels carrying the most rate kept (3/4 and 1/2 of them,
ranked over the image set at that quality) and the others replaced by the hyperprior's means, i.e.
given zero bits. If dropping the least-used quarter costs almost nothing, the model does not use
the channels it has, and more of them (a larger M) would not lift the ceiling.

`--source validation` uses the training run's held-out centre crops (never Kodak): the measurement
that decides where training goes. Each model's step and training seconds come from its metadata, so
the ceiling of successive exports gives the gain per CPU-hour of a longer schedule. Writes
benchmarks/results/ceiling.{json,md}, replacing the results of the same source and keeping the other's.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch

from .common import (
    RESULTS,
    TRAIN_DATA,
    kodak_paths,
    load_rgb,
    machine,
    machine_line,
    md_table,
    publish,
    read_json,
    set_threads,
)
from .metrics import psnr_rgb

QUALITIES = (1.0, 4.0, 8.0)
#: Fractions of the latent channels kept (those carrying the most rate) in the channel columns.
KEEP = (0.75, 0.5)
COLUMNS = ("coded", "step/2", "step/4", "unquantized", *(f"top {k:g}" for k in KEEP))
SOURCES = ("kodak", "validation")


def _pixels(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def load_images(source: str, count: int) -> list[np.ndarray]:
    """(H, W, 3) uint8 images: the first `count` Kodak images, or the training run's held-out crops."""
    if source == "kodak":
        return [np.array(load_rgb(p)) for p in kodak_paths(count)]
    from selic_engine.config import TrainConfig
    from selic_engine.training.data import list_images, split_holdout
    from selic_engine.training.validation import validation_images

    if not TRAIN_DATA.is_dir():
        raise SystemExit(f"training data not found at {TRAIN_DATA} (../shared/data is only on development machines)")
    _, held = split_holdout(list_images(TRAIN_DATA), TrainConfig.val_images)
    return [_pixels(x) for x in validation_images(TRAIN_DATA, held)[:count]]


@torch.no_grad()
def measure(model_name: str, images: list[np.ndarray]) -> dict[str, Any]:
    """Mean RGB PSNR (8-bit output) per quality and latent variant, and how the rate spreads over channels."""
    from selic_engine.weights import resolve_weights
    from selic_engine.weights.files import load_weights, read_metadata

    path = resolve_weights(model_name)
    model, mid = load_weights(path)
    meta = read_metadata(path)
    psnr: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    for q in QUALITIES:
        qt = torch.tensor([q])
        passes, bits = [], torch.zeros(model.config.M, dtype=torch.float64)
        for image in images:
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
            y = model.analyze(x, qt, None, None)
            z_hat, _ = model.entropy_bottleneck(model.h_a(y))
            means, scales = model.h_s(z_hat).chunk(2, dim=1)
            # The codec's own quantization (around the ChARM means) comes from the eval-mode ChARM pass.
            coded, likelihoods = model.charm(y, means, scales)
            bits -= likelihoods.double().log2().sum(dim=(0, 2, 3))
            passes.append((image, y, means, coded))
        order = torch.argsort(bits, descending=True)
        share = torch.cumsum(bits[order], 0) / bits.sum()
        counts = {k: round(k * len(order)) for k in KEEP}  # channels kept in each 'top k' column
        columns: dict[str, list[float]] = {k: [] for k in COLUMNS}
        for image, y, means, coded in passes:
            latents = {"coded": coded, "step/2": torch.round(y * 2) / 2, "step/4": torch.round(y * 4) / 4,
                       "unquantized": y}
            for k, count in counts.items():
                kept = order[:count]
                latents[f"top {k:g}"] = means.clone().index_copy_(1, kept, y.index_select(1, kept))
            for name, y_hat in latents.items():
                columns[name].append(psnr_rgb(image, _pixels(model.synthesize(y_hat, qt))))
        psnr[f"q{q:g}"] = {k: statistics.mean(v) for k, v in columns.items()}
        spread[f"q{q:g}"] = {f"rate share top {k:g}": float(share[count - 1]) for k, count in counts.items()} | {
            "channels for 99% of the rate": int(torch.searchsorted(share, torch.tensor(0.99, dtype=share.dtype))) + 1}
    return {"model": str(model_name), "model_id": mid, "N": model.config.N, "M": model.config.M,
            "step": int(meta.get("step", 0)), "train_hours": float(meta.get("train_seconds", 0)) / 3600,
            "psnr": psnr, "channels": spread}


def run(models: list[str], source: str, images: int, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"sources": {source: results}}: this source measured now, the other kept from `previous`."""
    pixels = load_images(source, images)
    sources = dict((previous or {}).get("sources", {}))
    sources[source] = {"images": len(pixels), "models": [measure(m, pixels) for m in models], "machine": machine()}
    return {"sources": {s: sources[s] for s in SOURCES if s in sources}}


def markdown(res: dict[str, Any]) -> str:
    return "\n".join(_source_markdown(source, r) for source, r in res["sources"].items())


def _source_markdown(source: str, res: dict[str, Any]) -> str:
    rows, spread = [], []
    for m in res["models"]:
        name = f"{m['model_id']} (N={m['N']}, M={m['M']}, {m['step']:,} steps, {m['train_hours']:.1f} h)"
        for q, row in m["psnr"].items():
            rows.append([name, q, *(row[k] for k in COLUMNS), row["unquantized"] - row["coded"]])
            spread.append([name, q, *m["channels"][q].values()])
    where = (f"the first {res['images']} Kodak images" if source == "kodak" else
             f"the training run's {res['images']} held-out centre crops (256², never Kodak)")
    table = md_table(["model", "quality", *(f"PSNR {k}" for k in COLUMNS), "ceiling − coded (dB)"], rows, digits=2)
    keys = list(res["models"][0]["channels"]["q1"])
    return "\n".join([
        f"Quality ceiling of the transforms: mean RGB PSNR (dB) on {where} when the latent is quantized as coded "
        "(rounding around the ChARM means), with a 2x / 4x finer step (plain rounding), and not at all. A small gap "
        "between 'coded' and 'unquantized' means the rate is not what limits quality: g_a/g_s are. 'top k': the "
        "unquantized latent with only that fraction of its channels kept (those carrying the most rate at that "
        "quality over these images), the others set to the hyperprior's means; a small drop from 'unquantized' "
        "means the least-used channels add little, so more channels (a larger M) would not lift the ceiling.",
        "", table, "", "How the rate spreads over the latent channels (coded latent, model likelihoods):", "",
        md_table(["model", "quality", *keys], spread, digits=3), "", f"Machine: {machine_line(res['machine'])}", ""])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["small"], help="preset names or .safetensors paths")
    p.add_argument("--source", choices=SOURCES, default="kodak",
                   help="Kodak (reporting) or the held-out training crops (decisions)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    set_threads(args.threads)
    path = RESULTS / "ceiling.json"
    res = run(args.models, args.source, args.images, read_json(path) if path.exists() else None)
    publish("ceiling", res, markdown)


if __name__ == "__main__":
    main()
