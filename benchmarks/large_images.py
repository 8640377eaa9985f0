"""Peak memory and time of encoding and decoding against image size (1, 4, 12, 24 MP): tiling keeps memory flat.

    python -m benchmarks.large_images [--sizes 1,4,12,24] [--model auto|tiny|small-random|small|PATH]
                                      [--untiled-up-to 4] [--threads N]

Every (size, encode or decode, tiled or not) runs in a fresh subprocess and reports its own
peak resident memory (getrusage ru_maxrss) and the peak it had reached before the timed call
(model loaded, image or file in memory): the difference is what the call itself needed.
Results are merged into benchmarks/results/large_images.json by (model, size, tiling), so sizes
can be run separately (`--sizes 24` later) and the Markdown table is rebuilt from all of them.

The image is Kodak's kodim23 upscaled (Lanczos) when ../shared/data/kodak is present, else a
synthetic photo-like image. `--model auto` uses the shipped weights when installed, else the
tests' tiny random model; `small-random` is the shipped architecture with random weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    KODAK,
    REPO,
    RESULTS,
    machine,
    machine_line,
    md_table,
    peak_rss_mib,
    read_json,
    set_threads,
    write_json,
)

RESULTS_JSON = RESULTS / "large_images.json"
UNTILED = 1 << 20  # a tile size no image reaches: the whole-image path, for comparison


def dimensions(megapixels: float) -> tuple[int, int]:
    """3:2 landscape with about this many pixels (24 MP -> 6000x4000)."""
    width = round(math.sqrt(megapixels * 1e6 * 1.5) / 8) * 8
    return width, round(width / 1.5 / 8) * 8


def _image(width: int, height: int):
    from PIL import Image

    if (KODAK / "kodim23.png").exists():
        from .speed import large_image

        return large_image((width, height)), "kodim23 upscaled (Lanczos)"
    from selic_engine.testing import photo_like

    return Image.fromarray(photo_like(height, width)), "synthetic photo-like image"


def _engine(model: str):
    """(engine, description) for a --model value."""
    import selic_engine as se

    if model in ("tiny", "small-random"):
        import torch

        from selic_engine.config import PRESETS
        from selic_engine.model import build_model
        from selic_engine.testing import build_tiny

        if model == "tiny":
            return se.register_model(build_tiny()), "tests' tiny random model (N=16, M=32)"
        torch.manual_seed(0)
        cfg = PRESETS["small"]
        net = build_model(cfg)
        net.update(force=True)
        return se.register_model(net.eval()), f"small preset with random weights (N={cfg.N}, M={cfg.M})"
    engine = se.get_engine(model)
    return engine, f"weights {model} (model id {engine.model_id})"


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this fresh process: encode the image to cfg['file'], or decode that file."""
    import torch

    import selic_engine as se

    set_threads(cfg["threads"])
    engine, described = _engine(cfg["model"])
    path = Path(cfg["file"])
    if cfg["op"] == "encode":
        image, source = _image(*dimensions(cfg["megapixels"]))
        before = peak_rss_mib()
        start = time.perf_counter()
        data = se.encode(image, cfg["quality"], caption=False, model=engine.model_id, tile=cfg["tile"])
        seconds = time.perf_counter() - start
        path.write_bytes(data)
        extra = {"width": image.width, "height": image.height, "bytes": len(data), "source": source,
                 "bpp": 8 * len(data) / (image.width * image.height)}
    else:
        data = path.read_bytes()
        before = peak_rss_mib()
        start = time.perf_counter()
        image = se.decode(data, tile=cfg["tile"])
        seconds = time.perf_counter() - start
        extra = {"width": image.width, "height": image.height}
    peak = peak_rss_mib()
    return {**extra, "seconds": seconds, "peak_mib": peak, "before_mib": before, "call_mib": max(peak - before, 0.0),
            "model_description": described, "torch_threads": torch.get_num_threads()}


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.large_images", "--worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_size(model: str, megapixels: float, tile: int, quality: float, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"model": model, "megapixels": megapixels, "tile": tile, "quality": quality, "threads": threads,
               "file": str(Path(tmp) / "image.selic")}
        encode = measure({**cfg, "op": "encode"})
        decode = measure({**cfg, "op": "decode"}) if "error" not in encode else {"error": "encode failed"}
    return {"model": model, "megapixels": megapixels, "tiled": tile != UNTILED, "tile": tile,
            "quality": quality, "encode": encode, "decode": decode}


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for r in sorted(results["runs"], key=lambda r: (r["model"], not r["tiled"], r["megapixels"])):
        e, d = r["encode"], r["decode"]
        if "error" in e or "error" in d:
            rows.append([r["model"], r["megapixels"], "tiled" if r["tiled"] else "untiled", e.get("error", "–"),
                         "", "", d.get("error", "–"), "", "", ""])
            continue
        rows.append([r["model"], r["megapixels"], "tiled" if r["tiled"] else "untiled", f"{e['width']}x{e['height']}",
                     e["seconds"], e["peak_mib"], e["call_mib"], d["seconds"], d["peak_mib"], d["call_mib"]])
    table = md_table(["model", "MP", "path", "size", "encode s", "encode peak MiB", "encode call MiB",
                      "decode s", "decode peak MiB", "decode call MiB"], rows, digits=1)
    models = sorted({(r["model"], (r["encode"].get("model_description") or "?")) for r in results["runs"]})
    notes = [f"- `{m}`: {d}" for m, d in models]
    source = next((r["encode"]["source"] for r in results["runs"] if "source" in r["encode"]), "?")
    return "\n".join([
        f"Peak resident memory (ru_maxrss of a fresh process per cell) and wall time; image: {source}, "
        f"quality {results['runs'][0]['quality'] if results['runs'] else '?'}; tile {results.get('tile')} px. "
        "'call MiB' is the growth of the peak during the encode or decode call itself (the process had already "
        "loaded the model and held the image or file).", "", table, "", *notes, "",
        f"Machine: {machine_line(results['machine'])}", ""])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,4,12,24", help="megapixels, comma-separated")
    p.add_argument("--model", default="auto", help="auto (shipped weights, else tiny), tiny, small-random, small or "
                   "a .safetensors path")
    p.add_argument("--tile", type=int, default=1024, help="tile size in pixels (the decoder default is 1024)")
    p.add_argument("--untiled-up-to", type=float, default=4.0,
                   help="also measure the whole-image path for sizes up to this many MP (0: never)")
    p.add_argument("--quality", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        print(json.dumps(worker(json.loads(argv[1]))))
        return
    args = parse_args(argv)
    os.environ.setdefault("SELIC_CAPTIONER", "none")
    os.environ.setdefault("SELIC_DEVICE", "cpu")
    if args.model == "auto":
        from selic_engine.weights import shipped_weights_path

        args.model = "small" if shipped_weights_path("small").exists() else "tiny"
    previous = read_json(RESULTS_JSON) if RESULTS_JSON.exists() else {"runs": []}
    runs = previous["runs"]
    for mp in [float(s) for s in args.sizes.split(",") if s]:
        tiles = [args.tile] + ([UNTILED] if mp <= args.untiled_up_to else [])
        for tile in tiles:
            result = run_size(args.model, mp, tile, args.quality, args.threads)
            runs = [r for r in runs if (r["model"], r["megapixels"], r["tiled"]) !=
                    (result["model"], result["megapixels"], result["tiled"])] + [result]
            out = {"tile": args.tile, "runs": runs, "machine": machine()}
            write_json(RESULTS_JSON, out)  # after every cell: an interrupted run keeps what it measured
            (RESULTS / "large_images.md").write_text(markdown(out), encoding="utf-8")
            e, d = result["encode"], result["decode"]
            print(f"{mp:g} MP {'tiled' if result['tiled'] else 'untiled'}: encode {e.get('seconds', e.get('error'))} "
                  f"s, peak {e.get('peak_mib')} MiB; decode {d.get('seconds', d.get('error'))} s, "
                  f"peak {d.get('peak_mib')} MiB", flush=True)
    print((RESULTS / "large_images.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
