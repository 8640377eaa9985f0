"""Where the quality ceiling is: the transforms, or the quantization?

    python -m benchmarks.ceiling [--models small /path/other.safetensors] [--images 8] [--threads N]

For each model and quality, Kodak images go through g_a and g_s with the latent quantized as the
codec does (rounding around the ChARM means), with a 2x and 4x finer quantization step, and not
quantized at all. If PSNR barely moves from the coded latent to the unquantized one, more bits
cannot help: only better transforms (wider, longer-trained) can. Writes
benchmarks/results/ceiling.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch

from .common import kodak_paths, load_rgb, machine, machine_line, md_table, publish, set_threads
from .metrics import psnr_rgb

QUALITIES = (1.0, 4.0, 8.0)
COLUMNS = ("coded", "step/2", "step/4", "unquantized")


def _pixels(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@torch.no_grad()
def measure(model_name: str, images: int) -> dict[str, Any]:
    """Mean RGB PSNR (8-bit output) per quality and quantization step, over the first `images` Kodak images."""
    from selic_engine.weights import resolve_weights
    from selic_engine.weights.files import load_weights

    path = resolve_weights(model_name)
    model, mid = load_weights(path)
    table: dict[str, dict[str, list[float]]] = {f"q{q:g}": {k: [] for k in COLUMNS} for q in QUALITIES}
    for image_path in kodak_paths(images):
        image = np.array(load_rgb(image_path))
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        for q in QUALITIES:
            qt = torch.tensor([q])
            y = model.analyze(x, qt, None, None)
            z_hat, _ = model.entropy_bottleneck(model.h_a(y))
            means, scales = model.h_s(z_hat).chunk(2, dim=1)
            # The codec's own quantization (around the ChARM means) comes from the eval-mode ChARM pass.
            coded, _ = model.charm(y, means, scales)
            latents = {"coded": coded, "step/2": torch.round(y * 2) / 2, "step/4": torch.round(y * 4) / 4,
                       "unquantized": y}
            for name, y_hat in latents.items():
                table[f"q{q:g}"][name].append(psnr_rgb(image, _pixels(model.synthesize(y_hat, qt))))
    return {"model": str(model_name), "model_id": mid, "N": model.config.N,
            "psnr": {q: {k: statistics.mean(v) for k, v in row.items()} for q, row in table.items()}}


def run(models: list[str], images: int) -> dict[str, Any]:
    return {"images": images, "models": [measure(m, images) for m in models], "machine": machine()}


def markdown(res: dict[str, Any]) -> str:
    rows = []
    for m in res["models"]:
        for q, row in m["psnr"].items():
            rows.append([f"{m['model_id']} (N={m['N']})", q, *(row[k] for k in COLUMNS),
                         row["unquantized"] - row["coded"]])
    table = md_table(["model", "quality", *(f"PSNR {k}" for k in COLUMNS), "ceiling − coded (dB)"], rows, digits=2)
    return "\n".join([
        f"Quality ceiling of the transforms: mean RGB PSNR (dB) on the first {res['images']} Kodak images when "
        "the latent is quantized as coded (rounding around the ChARM means), with a 2x / 4x finer step (plain "
        "rounding), and not at all. A small gap between 'coded' and 'unquantized' means the rate is not what "
        "limits quality: g_a/g_s are.", "", table, "", f"Machine: {machine_line(res['machine'])}", ""])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["small"], help="preset names or .safetensors paths")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    set_threads(args.threads)
    res = run(args.models, args.images)
    publish("ceiling", res, markdown)


if __name__ == "__main__":
    main()
