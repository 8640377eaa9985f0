"""The paper's ablations at reduced budgets.

(a) Semantic gain: the shipped model with the Kodak captions vs caption=False (no training).
(b, c) Fusion: models trained with no semantic branch (fusion "none") and with concat / add / mul
    fusion, all at the same small budget and seed, compared on Kodak against concat (the paper's).
(d) Caption probe (no training): per image, the right caption vs a wrong one (captions shuffled
    across images, fixed seed) vs the null vector; and how much the caption moves the fused latent,
    per channel, against the latent's own spread. If the encoder used the text, a wrong caption
    should cost something and the change should be more than a rounding error.
(e) Fine-tune (opt-in, --finetune): from --model's weights, the encoder side alone (`selic train --adapter`,
    decoder frozen) for the same steps, seed and data once with captions (dropout 0.2, the training default) and
    once with every caption dropped; then on Kodak the captions-tuned encoder with its captions and with
    caption=False, the no-captions-tuned one with caption=False, and the start with captions. Same start, same
    decoder (the files keep its model id), so the difference is far less noisy than between two models trained
    from scratch. Each exports its weight average over about the last 10% of the steps (--finetune-ema-decay;
    the training default 0.999 would keep most of the start in a 400-step average). Runs go to
    --runs/finetune-{captions,nocaptions} (a finished one is reused, so a rerun only evaluates); results to
    ablation_finetune.json and section (e) of ablation.md.

The training parts are opt-in (--train, --finetune) because they cost hours of CPU; --train calls the project's
own training loop with a variant of a preset (the `train` CLI only knows the fixed preset names), --finetune
calls `python -m selic_engine train --adapter` and `export --float16`.

    python -m benchmarks.ablation                                   # (a) only
    python -m benchmarks.ablation --train --steps 5000 --variants concat,add,mul,none [--seeds 0,1]
    python -m benchmarks.ablation --train --steps 2000 --pairs concat:0,add:0,mul:0,none:0,concat:1
    python -m benchmarks.ablation --no-semantic --probe --probe-qualities 1,4,8     # (d) only
    python -m benchmarks.ablation --no-semantic --finetune --finetune-steps 400 --threads 2 --eval-threads 2  # (e)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .bdrate import bd_rate_or_nan, quality_at_rate_or_nan
from .codecs import SELIC_QUALITIES, CodecUnavailableError, selic
from .common import (
    REPO,
    RESULTS,
    TRAIN_DATA,
    fmt,
    kodak_captions,
    kodak_paths,
    load_rgb,
    machine,
    machine_line,
    md_table,
    read_json,
    write_json,
)
from .rd_kodak import aggregate, log, measure_codec, measure_point

COMPARE_AT_BPP = (0.2, 0.9)
VARIANTS = ("concat", "add", "mul", "none")


# --- (a) semantic gain of the shipped model -------------------------------------------------------

def per_image_bd(points_test: list[dict[str, Any]], points_anchor: list[dict[str, Any]], metric: str) -> list[float]:
    """BD-rate per Kodak image: its spread says how much of the mean gain is noise."""
    out = []
    for image in sorted({p["image"] for p in points_anchor}):
        a = [p for p in points_anchor if p["image"] == image]
        t = [p for p in points_test if p["image"] == image]
        out.append(bd_rate_or_nan([p["bpp"] for p in a], [p[metric] for p in a],
                                  [p["bpp"] for p in t], [p[metric] for p in t]))
    return out


def compare(test: dict[str, Any], anchor: dict[str, Any]) -> dict[str, Any]:
    """BD-rate and PSNR differences at the comparison rates, test curve vs anchor curve."""
    out: dict[str, Any] = {"bd_rate_psnr": bd_rate_or_nan(anchor["bpp"], anchor["psnr"], test["bpp"], test["psnr"]),
                           "bd_rate_ms_ssim_db": bd_rate_or_nan(anchor["bpp"], anchor["ms_ssim_db"], test["bpp"],
                                                                test["ms_ssim_db"])}
    for bpp in COMPARE_AT_BPP:
        out[f"delta_psnr_at_{bpp}"] = (quality_at_rate_or_nan(test["bpp"], test["psnr"], bpp)
                                       - quality_at_rate_or_nan(anchor["bpp"], anchor["psnr"], bpp))
    return out


def versus(points_test: list[dict[str, Any]], points_anchor: list[dict[str, Any]]) -> dict[str, Any]:
    """compare() of the two curves, and the per-image BD-rate (PSNR) with its mean and spread over the images."""
    per_image = per_image_bd(points_test, points_anchor, "psnr")
    finite = [v for v in per_image if not math.isnan(v)]
    return {**compare(aggregate(points_test), aggregate(points_anchor)), "per_image_bd_rate_psnr": per_image,
            "per_image_mean": statistics.fmean(finite) if finite else math.nan,
            "per_image_stdev": statistics.stdev(finite) if len(finite) > 1 else math.nan}


def reusable_points(rd_json: Path, model_id: str, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """rd_kodak.json's selic / selic-nocaption points, when they are of this model and these images."""
    if not rd_json.exists():
        return {}
    rd = read_json(rd_json)
    out = {}
    for name in ("selic", "selic-nocaption"):
        c = rd["codecs"].get(name)
        if c and c["params"].get("model_id") == model_id and rd["images"] == names:
            out[name] = c["points"]
    return out


def semantic_gain(model: str, images: int, qualities: tuple[float, ...], rd_json: Path) -> dict[str, Any]:
    """Reuse rd_kodak.json's two selic runs when they are of this model and image set; else measure them."""
    paths = kodak_paths(images or None)
    names = [p.name for p in paths]
    points: dict[str, list[dict[str, Any]]] = {}
    try:
        codecs = {c.name: c for c in (selic(model, True), selic(model, False))}
    except CodecUnavailableError as exc:
        return {"skipped": str(exc)}
    model_id = codecs["selic"].params["model_id"]
    points.update(reusable_points(rd_json, model_id, names))
    source = "reused from rd_kodak.json" if len(points) == 2 else "measured by ablation.py"
    captions = kodak_captions()
    for name, codec in codecs.items():
        if name not in points:
            log(f"semantic gain: measuring {name}")
            points[name] = measure_codec(codec, paths, captions, qualities)
    curves = {n: aggregate(p) for n, p in points.items()}
    return {"model_id": model_id, "library": codecs["selic"].library, "images": names, "source": source,
            "machine": machine(), "curves": curves, **versus(points["selic"], points["selic-nocaption"])}


# --- (b, c) trained fusion variants ---------------------------------------------------------------

def train_one(spec: dict[str, Any]) -> None:
    """In a subprocess: register the variant as a preset, train it with the project's loop, export weights."""
    from selic_engine.config import PRESETS, TrainConfig, preset
    from selic_engine.training.checkpoint import trained_model
    from selic_engine.training.loop import train
    from selic_engine.weights.files import export

    name = f"ablation-{spec['variant']}"
    PRESETS[name] = preset(spec["base_preset"]).replace(name=name, fusion=spec["variant"], **spec["arch"])
    cfg = TrainConfig(preset=name, data=spec["data"], out=spec["out"], resume="auto", steps=spec["steps"],
                      seed=spec["seed"], batch_size=spec["batch_size"], crop=spec["crop"], min_crop=spec["crop"],
                      val_every=0, ckpt_every=max(1, min(250, spec["steps"])), workers=spec["workers"],
                      threads=spec["threads"])
    model, history = trained_model(train(cfg))
    export(model, Path(spec["out"]) / "model.safetensors", history)


def run_pairs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(variant, seed) to train: --pairs as given, else every variant with every seed."""
    if args.pairs:
        return [(v, int(seed)) for v, seed in (pair.split(":") for pair in args.pairs.split(","))]
    return [(v, int(seed)) for v in args.variants.split(",") for seed in args.seeds.split(",")]


def train_variants(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train (or resume) every variant x seed in its own process; returns where each model is."""
    runs = []
    for variant, seed in run_pairs(args):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown fusion variant {variant!r}; choose from {', '.join(VARIANTS)}")
        out = args.runs / f"{variant}-seed{seed}-steps{args.steps}"
        spec = {"variant": variant, "seed": seed, "steps": args.steps, "base_preset": args.base_preset,
                "arch": json.loads(args.arch), "data": str(args.data), "out": str(out),
                "batch_size": args.batch_size, "crop": args.crop, "workers": args.workers, "threads": args.threads}
        weights = out / "model.safetensors"
        if not weights.exists():
            log(f"ablation: training {variant} seed {seed} for {args.steps} steps -> {out}")
            cmd = [sys.executable, "-m", "benchmarks.ablation", "--train-one", json.dumps(spec)]
            subprocess.run(cmd, cwd=REPO, check=True)
        runs.append({**spec, "weights": str(weights)})
    return runs


def evaluate_variants(runs: list[dict[str, Any]], images: int, qualities: tuple[float, ...]) -> dict[str, Any]:
    """Kodak curves (with captions) of every trained variant, compared with concat of the same seed."""
    paths, captions = kodak_paths(images or None), kodak_captions()
    for run in runs:
        codec = selic(run["weights"], semantic=True)
        log(f"ablation: evaluating {run['variant']} seed {run['seed']}")
        run["curve"] = aggregate(measure_codec(codec, paths, captions, qualities))
    by_key = {(r["variant"], r["seed"]): r for r in runs}
    for run in runs:
        ref = by_key.get(("concat", run["seed"]))
        if ref is not None and ref is not run:
            run["vs_concat"] = compare(run["curve"], ref["curve"])
    seeds = sorted({r["seed"] for r in runs})
    noise = {}
    if len(seeds) > 1:  # same variant, different seed: the size of a difference that means nothing
        for variant in {r["variant"] for r in runs}:
            a, b = by_key.get((variant, seeds[0])), by_key.get((variant, seeds[1]))
            if a and b:
                noise[variant] = compare(b["curve"], a["curve"])
    return {"images": [p.name for p in paths], "runs": runs, "seed_noise": noise}


# --- (d) caption probe: right vs wrong caption vs null vector, and the latent change -----------------

def shuffled(names: list[str], seed: int) -> dict[str, str]:
    """name -> another image's name (a derangement: no image keeps its own), fixed by the seed."""
    rng = random.Random(seed)
    other = list(names)
    while any(a == b for a, b in zip(names, other, strict=True)):
        rng.shuffle(other)
    return dict(zip(names, other, strict=True))


def latent_change(engine: Any, image: Any, vectors: dict[str, Any], qualities: tuple[float, ...]) -> dict[str, Any]:
    """Per channel: RMS over positions of (fused latent with a caption - with the null vector), divided by the
    null-vector latent's own spatial standard deviation; and the same change in quantization bins (after the
    quality gain), with the share of rounded latent values that it flips."""
    import torch

    from selic_engine import imaging

    model = engine.model
    x = imaging.split(image)[0].to(engine.device).float().div_(255)
    with torch.no_grad():
        y3 = model.g_a(x)
        null = model.fusion(y3, None)
        spread = null.std(dim=(0, 2, 3))
        out: dict[str, Any] = {}
        for name, vector in vectors.items():
            fused = model.fusion(y3, torch.as_tensor(vector)[None])
            rms = (fused - null).pow(2).mean(dim=(0, 2, 3)).sqrt()
            bins = {}
            for q in qualities:
                gain = model.gains.gain(torch.tensor([q]))
                flipped = (torch.round(fused * gain) != torch.round(null * gain)).float().mean()
                bins[f"{q:g}"] = {"rms_bins_mean": float((rms * gain.flatten()).mean()),
                                  "rounded_values_changed": float(flipped)}
            out[name] = {"ratio_per_channel": (rms / spread.clamp_min(1e-12)).tolist(), "in_bins": bins}
    return out


def caption_probe(model: str, images: int, qualities: tuple[float, ...], seed: int, rd_json: Path
                  ) -> dict[str, Any]:
    """Right / wrong / null per image and quality (bpp, PSNR), and latent_change per image."""
    from selic_engine import get_engine, semantic

    paths = kodak_paths(images or None)
    names, captions = [p.name for p in paths], kodak_captions()
    wrong_of = shuffled(names, seed)
    try:
        right, null = selic(model, True), selic(model, False)
    except CodecUnavailableError as exc:
        return {"skipped": str(exc)}
    engine = get_engine(model)
    reused = reusable_points(rd_json, engine.model_id, names)
    runs = {"right": (right, captions, reused.get("selic")),
            "wrong": (right, {n: captions[wrong_of[n]] for n in names}, None),
            "null": (null, {}, reused.get("selic-nocaption"))}
    points: dict[str, list[dict[str, Any]]] = {k: [] for k in runs}
    latent = []
    for i, path in enumerate(paths, 1):
        image = load_rgb(path)
        for key, (codec, caps, old) in runs.items():
            for q in qualities:
                hit = [p for p in old or [] if p["image"] == path.name and p["setting"] == q]
                points[key].append(hit[0] if hit else {"image": path.name,
                                                       **measure_point(codec, image, q, caps.get(path.name))})
        texts = [captions[path.name], captions[wrong_of[path.name]]]
        vectors = semantic.embed_texts(texts, engine.config.text_dim)
        latent.append({"image": path.name, **latent_change(engine, image, dict(zip(("right", "wrong"), vectors,
                                                                                 strict=True)), qualities)})
        log(f"  probe {i}/{len(paths)} {path.name}")
    return {"model_id": engine.model_id, "images": names, "qualities": list(qualities), "seed": seed,
            "wrong_caption_of": wrong_of, "reused_from_rd_kodak": sorted(k for k, v in runs.items() if v[2]),
            "points": points, "latent": latent, "machine": machine()}


def probe_summary(pr: dict[str, Any]) -> dict[str, Any]:
    """Mean over images, per quality, of wrong - right and null - right (bpp %, PSNR dB), with their spread."""
    rows = []
    for q in pr["qualities"]:
        at = {k: {p["image"]: p for p in pts if p["setting"] == q} for k, pts in pr["points"].items()}
        row: dict[str, Any] = {"quality": q}
        for other in ("wrong", "null"):
            dbpp = [100 * (at[other][n]["bpp"] / at["right"][n]["bpp"] - 1) for n in pr["images"]]
            dpsnr = [at[other][n]["psnr"] - at["right"][n]["psnr"] for n in pr["images"]]
            row[other] = {"bpp_pct_mean": statistics.fmean(dbpp), "bpp_pct_sd": statistics.stdev(dbpp),
                          "psnr_db_mean": statistics.fmean(dpsnr), "psnr_db_sd": statistics.stdev(dpsnr),
                          "images_wrong_worse": sum(1 for b, d in zip(dbpp, dpsnr, strict=True) if b > 0 or d < 0)}
        rows.append(row)
    return {"rows": rows}


def latent_summary(pr: dict[str, Any]) -> dict[str, Any]:
    """Over images: the per-channel change ratio (median channel, largest channel), in bins and flipped values."""
    out = {}
    for key in ("right", "wrong"):
        ratios = [r[key]["ratio_per_channel"] for r in pr["latent"]]
        per_channel = [statistics.fmean(c) for c in zip(*ratios, strict=True)]
        out[key] = {"ratio_median_channel": statistics.median(per_channel), "ratio_max_channel": max(per_channel),
                    "ratio_mean": statistics.fmean(per_channel),
                    "in_bins": {q: {m: statistics.fmean(r[key]["in_bins"][q][m] for r in pr["latent"])
                                    for m in ("rms_bins_mean", "rounded_values_changed")}
                                for q in pr["latent"][0][key]["in_bins"]}}
    return out


def probe_markdown(pr: dict[str, Any]) -> list[str]:
    if "skipped" in pr:
        return [f"Not measured: {pr['skipped']}"]
    s, lat = probe_summary(pr), latent_summary(pr)
    reused = ", ".join(pr["reused_from_rd_kodak"])
    lines = [f"Model {pr['model_id']} on {len(pr['images'])} Kodak images, qualities "
             f"{', '.join(f'{q:g}' for q in pr['qualities'])}; the wrong caption is another image's (captions "
             f"shuffled with seed {pr['seed']}, none kept). Right and null points "
             f"{f'reused from rd_kodak.json ({reused})' if reused else 'measured here'}"
             f"; measured on {machine_line(pr['machine'])}. Differences against the right caption, mean ± sd over "
             "images; positive Δbpp / negative ΔPSNR: worse than the right caption.", "",
             md_table(["quality", "wrong: Δbpp %", "wrong: ΔPSNR dB", "images where wrong has Δbpp > 0 or ΔPSNR < 0",
                       "null: Δbpp %", "null: ΔPSNR dB"],
                      [[r["quality"], f"{r['wrong']['bpp_pct_mean']:+.3f} ± {r['wrong']['bpp_pct_sd']:.3f}",
                        f"{r['wrong']['psnr_db_mean']:+.4f} ± {r['wrong']['psnr_db_sd']:.4f}",
                        f"{r['wrong']['images_wrong_worse']}/{len(pr['images'])}",
                        f"{r['null']['bpp_pct_mean']:+.3f} ± {r['null']['bpp_pct_sd']:.3f}",
                        f"{r['null']['psnr_db_mean']:+.4f} ± {r['null']['psnr_db_sd']:.4f}"] for r in s["rows"]]),
             "", "Change of the fused latent (after the fusion module, before the quality gain) when the null vector "
             "is replaced by a caption's vector: per channel, RMS over positions divided by that channel's own "
             "spatial standard deviation, averaged over images; then the same change in quantization bins at each "
             "quality and the share of rounded latent values it flips.", ""]
    qs = list(lat["right"]["in_bins"])
    lines.append(md_table(["caption", "ratio, median channel", "ratio, mean", "ratio, largest channel",
                           *[f"RMS bins q{q}" for q in qs], *[f"values flipped q{q}" for q in qs]],
                          [[k, v["ratio_median_channel"], v["ratio_mean"], v["ratio_max_channel"],
                            *[v["in_bins"][q]["rms_bins_mean"] for q in qs],
                            *[f"{100 * v['in_bins'][q]['rounded_values_changed']:.2f}%" for q in qs]]
                           for k, v in lat.items()], digits=4))
    return lines + probe_reading(s["rows"], len(pr["images"]))


def probe_reading(rows: list[dict[str, Any]], n: int) -> list[str]:
    """Each mean difference set against its standard error over the images: is it distinguishable from zero?"""
    lines = ["", "Reading (generated): a mean difference more than 2 standard errors (sd/√n) from zero is called "
             "measurable."]
    for r in rows:
        for other in ("wrong", "null"):
            d = r[other]
            parts = []
            for key, unit in (("bpp_pct", "% bpp"), ("psnr_db", " dB")):
                mean, se = d[f"{key}_mean"], d[f"{key}_sd"] / math.sqrt(n)
                verdict = "measurable" if abs(mean) > 2 * se else "not measurable"
                parts.append(f"{mean:+.4f}{unit} ({verdict}, {abs(mean) / max(se, 1e-12):.1f} SE)")
            lines.append(f"- q{r['quality']:g}, {other} vs right caption: " + "; ".join(parts) + ".")
    return lines


# --- (e) the encoder fine-tuned with and without captions, from the same start -------------------------

#: run -> caption dropout: the training default, and every caption dropped
FINETUNE_RUNS = {"captions": 0.2, "nocaptions": 1.0}
#: curve -> (run whose encoder codes it, None for the start weights; encode with the Kodak captions?)
FINETUNE_CURVES = {"start": (None, True), "captions": ("captions", True), "captions-nocaption": ("captions", False),
                   "nocaptions": ("nocaptions", False)}
#: comparison -> (test curve, anchor curve)
FINETUNE_PAIRS = {"captions vs nocaptions": ("captions", "nocaptions"),
                  "captions: with vs without its caption": ("captions", "captions-nocaption"),
                  "captions vs start": ("captions", "start"), "nocaptions vs start": ("nocaptions", "start"),
                  "captions-nocaption vs start": ("captions-nocaption", "start")}
FINETUNE_CKPT_EVERY = 100


def finetune_ema_decay(args: argparse.Namespace) -> float:
    """The weight average that is exported: --finetune-ema-decay, else one over the last ~10% of the steps (the
    training default 0.999 would leave ~2/3 of the start weights in the average of a 400-step run)."""
    return args.finetune_ema_decay or min(0.999, max(0.5, 1 - 10 / args.finetune_steps))


def finetune_run(args: argparse.Namespace, name: str, dropout: float, init: Path) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one encoder fine-tune with `selic train --adapter`, export its
    weight average; returns where it is, how long it took and on what."""
    from selic_engine.training.checkpoint import load

    out = args.runs / f"finetune-{name}"
    last, weights = out / "last.pt", out / "encoder.safetensors"
    steps = args.finetune_steps
    same = {"init_weights": str(init), "caption_dropout": dropout, "lr": args.finetune_lr, "seed": 0,
            "ema_decay": finetune_ema_decay(args), "adapter": True, "batch_size": args.batch_size, "crop": args.crop}
    state = load(last) if last.exists() else None
    if state is not None:
        old = json.loads(state["train_config"])
        diff = {k: (old.get(k), v) for k, v in same.items() if old.get(k) != v}
        if diff:
            raise SystemExit(f"{out} holds a run with other settings (theirs, ours): {diff}; remove it or use --runs")
    wall = None
    if state is None or int(state["step"]) < steps:
        log(f"finetune: training {name} (caption dropout {dropout:g}) to step {steps} -> {out}")
        cmd = [sys.executable, "-m", "selic_engine", "train", "--adapter", "--init-weights", str(init),
               "--embedder", "minilm", "--preset", "small", "--data", str(args.data), "--out", str(out),
               "--resume", "auto", "--steps", str(steps), "--seed", "0", "--lr", repr(args.finetune_lr),
               "--caption-dropout", repr(dropout), "--ema-decay", repr(same["ema_decay"]),
               "--batch-size", str(args.batch_size), "--crop", str(args.crop), "--min-crop", str(args.crop),
               "--val-every", "0", "--ckpt-every", str(min(steps, FINETUNE_CKPT_EVERY)),
               "--workers", str(args.workers), "--threads", str(args.threads), "--precision", "auto"]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True)
        wall = time.perf_counter() - t0
        state = load(last)
    if not weights.exists() or weights.stat().st_mtime < last.stat().st_mtime:
        subprocess.run([sys.executable, "-m", "selic_engine", "export", str(last), "-o", str(weights), "--float16"],
                       cwd=REPO, check=True)
    sessions = [r["start"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "start" in r]
    seconds = float(state.get("train_seconds", 0))
    return {"caption_dropout": dropout, "out": str(out), "weights": str(weights), "step": int(state["step"]),
            "train_seconds": seconds, "steps_per_s": int(state["step"]) / seconds if seconds else math.nan,
            "wall_seconds_this_session": wall, "train_config": json.loads(state["train_config"]),
            "sessions": [{k: v for k, v in r.items() if k != "train_config"} for r in sessions]}


def finetune(args: argparse.Namespace, qualities: tuple[float, ...]) -> dict[str, Any]:
    """(e): both fine-tunes from --model, then Kodak curves of the four encoders / caption settings and their
    comparisons. Every file must decode with the start's decoder (the same model id)."""
    from selic_engine.weights import resolve_weights
    from selic_engine.weights.files import load_weights, weights_digest

    init = resolve_weights(args.model).resolve()
    runs = {name: finetune_run(args, name, dropout, init) for name, dropout in FINETUNE_RUNS.items()}
    files = {None: init, **{name: Path(r["weights"]) for name, r in runs.items()}}
    digests = {name: weights_digest(load_weights(path)[0]) for name, path in files.items()}
    codecs = {c: selic(str(files[run]), semantic) for c, (run, semantic) in FINETUNE_CURVES.items()}
    ids = {c: codec.params["model_id"] for c, codec in codecs.items()}
    if len(set(ids.values())) != 1:
        raise RuntimeError(f"the fine-tuned encoders must keep the start's decoder (one model id), got {ids}")
    if len(set(digests.values())) != len(digests):
        raise RuntimeError(f"a fine-tune left the encoder unchanged: weight digests {digests}")
    for name, run in runs.items():
        run["weights_digest"] = digests[name]
    paths, captions = kodak_paths(args.images or None), kodak_captions()
    points = {}
    for c, codec in codecs.items():
        log(f"finetune: measuring {c}")
        points[c] = measure_codec(codec, paths, captions, qualities)
    options = {"steps": args.finetune_steps, "lr": args.finetune_lr, "ema_decay": finetune_ema_decay(args),
               "seed": 0, "batch_size": args.batch_size, "crop": args.crop, "workers": args.workers,
               "threads": args.threads, "eval_threads": args.eval_threads, "embedder": "minilm", "data": args.data}
    return {"benchmark": "ablation_finetune", "start": {"weights": str(init), "model_id": ids["start"],
                                                        "weights_digest": digests[None]},
            "options": options, "runs": runs, "images": [p.name for p in paths], "qualities": list(qualities),
            "machine": machine(), "curves": {c: aggregate(p) for c, p in points.items()}, "points": points,
            "comparisons": {k: versus(points[t], points[a]) for k, (t, a) in FINETUNE_PAIRS.items()}}


def finetune_markdown(ft: dict[str, Any]) -> list[str]:
    o, n = ft["options"], len(ft["images"])
    lines = [f"From {Path(ft['start']['weights']).name} (model {ft['start']['model_id']}), the encoder side (g_a, "
             f"fusion, h_a) fine-tuned with `selic train --adapter` (decoder frozen) for {o['steps']} steps at lr "
             f"{o['lr']:g}, batch {o['batch_size']}, crop {o['crop']}, seed {o['seed']}, exported as the weight "
             f"average (decay {o['ema_decay']:g}): once with captions (dropout 0.2, the training default) and once "
             "with every caption dropped. Both keep the start's decoder (the same model id). Evaluated on "
             f"{n} Kodak images at qualities {', '.join(f'{q:g}' for q in ft['qualities'])} (real file sizes, RGB "
             f"PSNR) on {machine_line(ft['machine'])}.", "",
             "Both runs start from the same seed and see the same crops in the same order (the caption dropout "
             "never changes the crops: tests/test_training.py); they differ only in the captions.", "",
             md_table(["run", "caption dropout", "steps", "training s", "steps/s", "precision", "machine", "threads"],
                      [[name, r["caption_dropout"], r["step"], f"{r['train_seconds']:.0f}", r["steps_per_s"],
                        ", ".join(sorted({s["precision"] for s in r["sessions"]})),
                        ", ".join(sorted({s["machine"] for s in r["sessions"]})),
                        ", ".join(sorted({str(s["threads"]) for s in r["sessions"]}))]
                       for name, r in ft["runs"].items()]), "",
             md_table(["curve", "encoder", "caption at encode", *[f"PSNR @ {b} bpp" for b in COMPARE_AT_BPP],
                       "bpp range"],
                      [[c, run or "start", "Kodak captions" if sem else "caption=False",
                        *[quality_at_rate_or_nan(ft["curves"][c]["bpp"], ft["curves"][c]["psnr"], b)
                          for b in COMPARE_AT_BPP],
                        f"{min(ft['curves'][c]['bpp']):.3f}–{max(ft['curves'][c]['bpp']):.3f}"]
                       for c, (run, sem) in FINETUNE_CURVES.items()], digits=3), "",
             "Comparisons, test vs anchor; negative BD-rate: the test needs fewer bits for the same PSNR.", "",
             md_table(["test vs anchor", "BD-rate PSNR (%)", "BD-rate MS-SSIM dB (%)",
                       *[f"ΔPSNR @ {b} bpp (dB)" for b in COMPARE_AT_BPP], "per-image BD-rate mean ± sd (%)",
                       "images where the test is better"],
                      [[k, v["bd_rate_psnr"], v["bd_rate_ms_ssim_db"],
                        *[v[f"delta_psnr_at_{b}"] for b in COMPARE_AT_BPP],
                        f"{fmt(v['per_image_mean'])} ± {fmt(v['per_image_stdev'])}",
                        f"{sum(1 for x in v['per_image_bd_rate_psnr'] if _finite(x) and x < 0)}/{n}"]
                       for k, v in ft["comparisons"].items()], digits=3), "",
             "Reading (generated): a mean per-image BD-rate more than 2 standard errors (sd/√n) from zero is called "
             "measurable."]
    for k, v in ft["comparisons"].items():
        mean, sd = v["per_image_mean"], v["per_image_stdev"]
        if not (_finite(mean) and _finite(sd)):
            lines.append(f"- {k}: too few images or points to tell.")
            continue
        se = sd / math.sqrt(n)
        verdict = "measurable" if abs(mean) > 2 * se else "not measurable"
        lines.append(f"- {k}: {mean:+.3f}% ({verdict}, {abs(mean) / max(se, 1e-12):.1f} SE).")
    return lines


# --- report ---------------------------------------------------------------------------------------

def markdown(results: dict[str, Any], results_dir: Path = RESULTS) -> str:
    """ablation.md, from ablation.json, and (e) from ablation_finetune.json beside it when there is one."""
    lines = ["### (a) Semantic gain of the shipped model", ""]
    sg = results.get("semantic", {})
    if "skipped" in sg:
        lines.append(f"Not measured: {sg['skipped']}")
    elif sg:
        lines += [f"Model {sg['model_id']} on {len(sg['images'])} Kodak images (points {sg['source']}; measured on "
                  f"{machine_line(sg['machine'])}). "
                  "Captions from kodak/captions.tsv vs `caption=False`; negative BD-rate: captions save bits.", "",
                  md_table(["BD-rate PSNR (%)", "BD-rate MS-SSIM dB (%)",
                            *[f"ΔPSNR @ {b} bpp (dB)" for b in COMPARE_AT_BPP], "per-image BD-rate mean ± sd (%)"],
                           [[sg["bd_rate_psnr"], sg["bd_rate_ms_ssim_db"],
                             *[sg[f"delta_psnr_at_{b}"] for b in COMPARE_AT_BPP],
                             f"{fmt(sg['per_image_mean'], 2)} ± {fmt(sg['per_image_stdev'], 2)}"]], digits=3)]
    if results.get("probe"):
        lines += ["", "### (d) Right caption, wrong caption, null vector", "", *probe_markdown(results["probe"])]
    if (results_dir / "ablation_finetune.json").exists():
        lines += ["", "### (e) The encoder fine-tuned with vs without captions, from the same start", "",
                  *finetune_markdown(read_json(results_dir / "ablation_finetune.json"))]
    lines += ["", "### (b, c) Fusion variants trained at an equal budget", ""]
    tr = results.get("training")
    if not tr:
        lines.append("Not run (opt-in: `python -m benchmarks.ablation --train --steps N "
                     "--variants concat,add,mul,none`).")
        return "\n".join(lines) + "\n"
    o = tr["options"]
    lines += [f"Each variant: {o['steps']} steps, batch {o['batch_size']}, crop {o['crop']}, base preset "
              f"{o['base_preset']} with {o['arch'] or 'no changes'}; evaluated on {len(tr['images'])} Kodak images "
              f"with captions, on {machine_line(tr['machine'])}. Compared with concat (the paper's fusion) of the "
              "same seed.", ""]
    rows = []
    for r in tr["runs"]:
        v = r.get("vs_concat", {})
        at = [quality_at_rate_or_nan(r["curve"]["bpp"], r["curve"]["psnr"], b) for b in COMPARE_AT_BPP]
        rows.append([r["variant"], r["seed"], *at, v.get("bd_rate_psnr"),
                     *[v.get(f"delta_psnr_at_{b}") for b in COMPARE_AT_BPP]])
    lines.append(md_table(["fusion", "seed", *[f"PSNR @ {b} bpp" for b in COMPARE_AT_BPP], "BD-rate vs concat (%)",
                           *[f"ΔPSNR @ {b} bpp" for b in COMPARE_AT_BPP]], rows, digits=2))
    if tr.get("seed_noise"):
        lines += ["", "Seed noise (seed 1 vs seed 0 of the same variant):", "",
                  md_table(["fusion", "BD-rate (%)", *[f"ΔPSNR @ {b} bpp" for b in COMPARE_AT_BPP]],
                           [[v, n["bd_rate_psnr"], *[n[f"delta_psnr_at_{b}"] for b in COMPARE_AT_BPP]]
                            for v, n in tr["seed_noise"].items()], digits=2)]
    lines += reading(tr)
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def reading(tr: dict[str, Any]) -> list[str]:
    """What the fusion table says: each difference from concat set against concat's own seed-to-seed difference."""
    tops = [max(r["curve"]["bpp"]) for r in tr["runs"]]
    lines = ["", f"Reading (generated): the curves reach {min(tops):.2f}–{max(tops):.2f} bpp at the top quality; "
             "a comparison rate outside a curve is shown as –."]
    noise = tr.get("seed_noise", {}).get("concat", {})
    seeds = sorted(r["seed"] for r in tr["runs"] if r["variant"] == "concat")
    for r in tr["runs"]:
        for b in COMPARE_AT_BPP:
            d, n = r.get("vs_concat", {}).get(f"delta_psnr_at_{b}"), noise.get(f"delta_psnr_at_{b}")
            if not (_finite(d) and _finite(n)):
                continue
            ratio = abs(d) / max(abs(n), 1e-9)
            verdict = "within the seed noise" if ratio <= 1 else f"{ratio:.1f}× the seed noise"
            lines.append(f"- {r['variant']} (seed {r['seed']}) vs concat at {b} bpp: {d:+.2f} dB; "
                         f"concat seed {seeds[-1]} vs seed {seeds[0]}: {n:+.2f} dB; so {verdict}.")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-one", help=argparse.SUPPRESS)
    p.add_argument("--model", default="small", help="model of (a), (d) and the start of (e): preset name or "
                   ".safetensors path")
    p.add_argument("--images", type=int, default=0, help="first N Kodak images (default all 24)")
    p.add_argument("--qualities", default=",".join(f"{q:g}" for q in SELIC_QUALITIES))
    p.add_argument("--no-semantic", action="store_true", help="skip (a)")
    p.add_argument("--probe", action="store_true", help="(d): right vs wrong caption vs null vector, latent change")
    p.add_argument("--probe-qualities", default="1,4,8")
    p.add_argument("--probe-seed", type=int, default=0, help="seed of the caption shuffle")
    p.add_argument("--train", action="store_true", help="train and compare the fusion variants (slow)")
    p.add_argument("--finetune", action="store_true", help="(e): fine-tune the encoder of --model with and without "
                   "captions, compare on Kodak (slow)")
    p.add_argument("--finetune-steps", type=int, default=400)
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--finetune-ema-decay", type=float, default=0.0,
                   help="decay of the exported weight average (0: 1 - 10/steps, within [0.5, 0.999])")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0", help="e.g. 0,1 to estimate seed noise")
    p.add_argument("--pairs", default="", help="variant:seed list instead of variants x seeds, e.g. "
                   "concat:0,add:0,mul:0,none:0,concat:1 (one second seed to size the noise)")
    p.add_argument("--base-preset", default="small")
    p.add_argument("--arch", default="{}", help='JSON overrides of the preset, e.g. {"N": 16, "M": 32}')
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch default)")
    p.add_argument("--eval-threads", type=int, default=1, help="torch threads for the Kodak evaluation")
    p.add_argument("--data", type=Path, default=TRAIN_DATA)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "ablation", help="checkpoints (outside tracked files)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.train_one:
        train_one(json.loads(args.train_one))
        return
    import torch

    torch.set_num_threads(args.eval_threads)  # training runs in subprocesses with their own setting
    qualities = tuple(float(q) for q in args.qualities.split(","))
    json_path = args.out / "ablation.json"
    previous = read_json(json_path) if json_path.exists() else {}
    results: dict[str, Any] = {"benchmark": "ablation", "semantic": previous.get("semantic", {}),
                               "probe": previous.get("probe"), "training": previous.get("training")}
    if not args.no_semantic:
        results["semantic"] = semantic_gain(args.model, args.images, qualities, args.out / "rd_kodak.json")
    if args.probe:
        probe_qualities = tuple(float(q) for q in args.probe_qualities.split(","))
        results["probe"] = caption_probe(args.model, args.images, probe_qualities, args.probe_seed,
                                         args.out / "rd_kodak.json")
    if args.train:
        runs = train_variants(args)
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "train_one"}
        results["training"] = {"options": options, "machine": machine(),
                               **evaluate_variants(runs, args.images, qualities)}
    write_json(json_path, results)
    if args.finetune:
        write_json(args.out / "ablation_finetune.json", finetune(args, qualities))
    (args.out / "ablation.md").write_text("# Ablations\n\n" + markdown(results, args.out), encoding="utf-8")
    log(f"wrote {json_path}{', ablation_finetune.json' if args.finetune else ''} and ablation.md")


if __name__ == "__main__":
    main()
