"""What coding the latent in independent 1024-px row bands costs in rate and PSNR.

    python -m benchmarks.band_cost [--scale 2] [--quality 4] [--threads N]

The portrait Kodak images (512x768), upscaled (Lanczos) so that they span more than one coding
band, are encoded with the shipped layout (bands of 64 latent rows) and with one band over the
whole latent (the ChARM sees every row, as in format version 1). Both are decoded; the table gives
bytes and RGB PSNR of each. Writes benchmarks/results/band_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import numpy as np
from PIL import Image

from .common import kodak_paths, load_rgb, machine, machine_line, md_table, publish, set_threads
from .metrics import psnr_rgb


def code(image: Image.Image, quality: float, band_rows: int) -> tuple[int, float]:
    """(stream bytes, RGB PSNR) of a round trip with the given coding-band height (encoder and decoder alike)."""
    import torch

    import selic_engine as se
    from selic_engine.container import quantize_quality
    from selic_engine.model.determinism import onednn_conv

    model, x = se.get_engine().model, torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    quality = quantize_quality(quality)
    with onednn_conv():
        coded = model.compress(x, quality, band_rows=band_rows)
        out = model.decompress(coded.z_stream, coded.y_stream, quality, (image.height, image.width),
                               band_rows=band_rows)
    return len(coded.z_stream) + len(coded.y_stream), psnr_rgb(np.asarray(image), out.numpy())


def run(scale: int, quality: float) -> dict[str, Any]:
    import selic_engine as se
    from selic_engine.entropy import coding_bands

    geometry = se.get_engine().model.geometry

    rows = []
    for path in kodak_paths():
        original = load_rgb(path)
        if original.height <= original.width:
            continue
        image = original.resize((original.width * scale, original.height * scale), Image.Resampling.LANCZOS)
        latent_rows = geometry.z_shape((image.height, image.width))[0] * geometry.hyper_stride // geometry.latent_stride
        bands = len(coding_bands(latent_rows, geometry.coding_band_rows))
        banded, whole = code(image, quality, geometry.coding_band_rows), code(image, quality, 1 << 20)
        pixels = image.width * image.height
        rows.append({"image": path.name, "size": f"{image.width}x{image.height}", "bands": bands,
                     "bytes_banded": banded[0], "bytes_one_band": whole[0],
                     "bpp_banded": 8 * banded[0] / pixels, "bpp_one_band": 8 * whole[0] / pixels,
                     "psnr_banded": banded[1], "psnr_one_band": whole[1],
                     "rate_change_pct": 100 * (banded[0] / whole[0] - 1)})
        print(rows[-1], flush=True)
    return {"scale": scale, "quality": quality, "band_rows": geometry.coding_band_rows, "images": rows,
            "mean_rate_change_pct": statistics.mean(r["rate_change_pct"] for r in rows),
            "mean_psnr_change_db": statistics.mean(r["psnr_banded"] - r["psnr_one_band"] for r in rows),
            "machine": machine()}


def markdown(res: dict[str, Any]) -> str:
    table = md_table(["image", "size", "bands", "bpp banded", "bpp one band", "rate change %", "PSNR banded",
                      "PSNR one band"],
                     [[r["image"], r["size"], r["bands"], r["bpp_banded"], r["bpp_one_band"], r["rate_change_pct"],
                       r["psnr_banded"], r["psnr_one_band"]] for r in res["images"]], digits=3)
    return "\n".join([
        f"Cost of coding the latent in independent bands of {res['band_rows']} latent rows (1024 px), against one "
        f"band over the whole latent; Kodak portrait images upscaled {res['scale']}x (Lanczos), quality "
        f"{res['quality']}, real file sizes, shipped model.", "", table, "",
        f"Mean rate change {res['mean_rate_change_pct']:+.2f}%, mean PSNR change "
        f"{res['mean_psnr_change_db']:+.3f} dB.", "", f"Machine: {machine_line(res['machine'])}", ""])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--quality", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("SELIC_CAPTIONER", "none")
    set_threads(args.threads)
    res = run(args.scale, args.quality)
    publish("band_cost", res, markdown)


if __name__ == "__main__":
    main()
