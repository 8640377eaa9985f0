"""The prepared GPU burst: about ten minutes of CUDA training of decoder v2's joint stage, on a lent machine.

Such a machine is rare here, lent for about 15 minutes, reaches nothing (no package index, no model hub) and
receives only the working tree, 64 MiB at most. So the burst is prepared on the CPU beforehand:

    python -m selic_engine.training.burst pack --init V2.safetensors   # writes .burst/ (ignored by git), prints
                                                                        # the command

`pack` writes what the machine lacks into `.burst/`: the weights the run continues (float16: decoder v2 as
training.assemble or the last export of its joint stage left it; decoder v1 is frozen, so its weights are not
trained any more) with their own config as the run's preset (the weights may be any v2 variant, and a preset
that differs would widen them or be refused); the training photos outside the validation hold-out, re-encoded
small enough to travel (JPEG, 4:4:4) in what the weights leave of the budget; their captions and the cached caption
vectors (so no text model is needed there); the compressai wheel for the machine's Python. The printed command
(give it to the device tool with carry [".burst"]) installs the wheel, trains with the same `train()` as here
(batch 16, 256² crops, `--minutes`), and exports the weight average to $OUT/burst.safetensors with its log.
Nothing else differs from a CPU run, which is what `tests/test_training.py` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from ..config import TrainConfig
from ..weights.files import load_weights, read_metadata, save_weights
from .captions import cache_dir
from .data import MAX_SIDE, list_images, read_captions, split_holdout

BURST_DIR = Path(".burst")
INIT = "init.safetensors"  # the weights the burst continues, inside the burst folder
PRESET_FILE = "preset.json"  # their config, as the run's --preset (config.preset reads a full config as a variant)
WHEELS = ("compressai==1.2.8", "pytorch-msssim==1.0.0")
DEVICE_PYTHON = "3.12"  # the lent machines' python3 (device tool KINDS.md), which carries torch
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def burst_config(data: str, out: str, minutes: float, preset: str, init_weights: str) -> TrainConfig:
    """The burst's training run: what `train()` gets on the device (the CPU test trains from the same flags)."""
    return TrainConfig(preset=preset, init_weights=init_weights, data=data, out=out, resume="auto", batch_size=16,
                       crop=256, min_crop=256, lr=1e-4, workers=8, val_every=0, val_images=0, ckpt_every=500,
                       minutes=minutes, precision="auto", steps=10**9)


def train_args(cfg: TrainConfig) -> list[str]:
    """`selic train` flags that reproduce cfg (fields left at their defaults are omitted)."""
    defaults, args = TrainConfig(), []
    for name, value in vars(cfg).items():
        if value != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            args.append(flag if value is True else f"{flag}={value}")
    return args


def pack_init(weights: Path, burst: Path) -> int:
    """Copy the weights the burst continues into the burst folder in float16 (half the bytes that travel;
    training upcasts them), with their history (step, training seconds), and their config beside them as the
    run's preset; returns the bytes written."""
    model, _ = load_weights(weights)
    history = {k: v for k, v in read_metadata(weights).items() if k not in ("config", "model_id", "storage")}
    save_weights(model, burst / INIT, history, torch.float16)
    (burst / PRESET_FILE).write_text(model.config.to_json() + "\n")
    return sum((burst / name).stat().st_size for name in (INIT, PRESET_FILE))


def pack_data(root: Path, dest: Path, max_side: int = 512, quality: int = 90, holdout: int = 12,
              budget: int = 38 << 20) -> int:
    """Re-encode training photos (never the validation hold-out) as JPEG into dest; returns the bytes written.

    Photos are taken in a fixed pseudo-random order (hash of the path) until `budget` bytes: at 512 px and
    JPEG 90 4:4:4 about 40 fit per MiB (550 of the 1,407 in 38 MiB), which keeps the detail a high-quality codec
    must learn rather than shrinking every photo. Files keep their relative paths
    with a .jpg suffix; captions.tsv is rewritten to match.
    """
    train_paths, _ = split_holdout(list_images(root), holdout)
    captions = read_captions(root / "captions.tsv")
    dest.mkdir(parents=True, exist_ok=True)
    rows, total, renamed = ["path\tcaption"], 0, {}
    for rel in sorted(train_paths, key=lambda p: hashlib.sha256(f"burst:{p}".encode()).hexdigest()):
        new = str(Path(rel).with_suffix(".jpg"))
        if new in renamed.values():
            raise ValueError(f"{rel}: another photo already packs to {new}")
        renamed[rel] = new
        with Image.open(root / rel) as img:
            img.draft("RGB", (max_side, max_side))
            img = img.convert("RGB")
            img.thumbnail((min(max_side, MAX_SIDE),) * 2, Image.Resampling.LANCZOS)
            (dest / new).parent.mkdir(parents=True, exist_ok=True)
            img.save(dest / new, quality=quality, subsampling=0)
        size = (dest / new).stat().st_size
        if total + size > budget:
            (dest / new).unlink()
            break
        total += size
        rows += [f"{new}\t{c}" for c in captions.get(rel, [])]
    (dest / "captions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return total


def cache_vectors(data: Path, dest: Path, embedder: str = "minilm") -> Path:
    """Compute (or reuse) the caption vectors here and copy them into dest, the device's $SELIC_CACHE."""
    from ..semantic import training_embedder
    from .captions import embed_captions

    name, embed = training_embedder(embedder)
    embed_captions(read_captions(data / "captions.tsv"), name, embed)
    dest.mkdir(parents=True, exist_ok=True)
    for f in cache_dir().glob(f"captions-{name}-*.npy"):
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def fetch_wheels(dest: Path) -> None:
    """The packages the device image lacks, for its Python (pip talks to the package index from here)."""
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(dest),
                    *WHEELS], check=True)


def device_command(minutes: float = 9.0, burst: Path = BURST_DIR) -> str:
    """The one shell line for the device tool (run from the repository root there, with carry [burst])."""
    cfg = burst_config(data=str(burst / "data"), out="/tmp/burst-run", minutes=minutes,
                       preset=str(burst / PRESET_FILE), init_weights=str(burst / INIT))
    train = shlex.join(train_args(cfg))
    return (f"python3 -m pip install -q --no-index --no-deps --target /tmp/site {burst}/wheels/*.whl && "
            f"export PYTHONPATH=/tmp/site:$PWD SELIC_CACHE=$PWD/{burst}/cache PYTHONUNBUFFERED=1 && nvidia-smi -L && "
            f"python3 -m selic_engine train {train} && "
            "python3 -m selic_engine export /tmp/burst-run/last.pt -o $OUT/burst.safetensors --float16 && "
            "cp /tmp/burst-run/log.jsonl /tmp/burst-run/last.pt $OUT/")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m selic_engine.training.burst", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pack", "command"])
    p.add_argument("--init", type=Path, help="pack: the decoder-v2 weights the burst continues")
    p.add_argument("--data", type=Path, default=Path(TrainConfig.data))
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--budget-mib", type=float, default=38, help="weights and photo bytes that travel (64 MiB in "
                   "all, with the repository)")
    p.add_argument("--minutes", type=float, default=9.0)
    args = p.parse_args(argv)
    if args.action == "pack":
        if args.init is None:
            p.error("pack needs --init: the weights the burst continues")
        shutil.rmtree(BURST_DIR, ignore_errors=True)
        BURST_DIR.mkdir()
        weights = pack_init(args.init, BURST_DIR)
        size = pack_data(args.data, BURST_DIR / "data", args.max_side, budget=int(args.budget_mib * 2**20) - weights)
        cache_vectors(BURST_DIR / "data", BURST_DIR / "cache")
        fetch_wheels(BURST_DIR / "wheels")
        print(f"packed {size / 2**20:.1f} MiB of photos into {BURST_DIR}/", file=sys.stderr)
    print(device_command(args.minutes))


if __name__ == "__main__":
    main()
