"""Rate-distortion on Kodak: selic against the codecs people use, measured here on real files.

bpp counts the whole file's bytes. PSNR and MS-SSIM are on RGB, per image, then averaged over
the images at each setting (as the papers do); bpp is averaged the same way.

    python -m benchmarks.rd_kodak [--images N] [--codecs a,b] [--model small|PATH] [--quick] [--merge]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from . import published
from .bdrate import bd_psnr, bd_rate_or_nan, overlap_fraction
from .codecs import ALL_NAMES, Codec, build
from .common import (
    RESULTS,
    kodak_captions,
    kodak_paths,
    load_rgb,
    machine,
    machine_line,
    md_table,
    read_json,
    set_threads,
    write_json,
)
from .metrics import as_array, ms_ssim_db, ms_ssim_rgb, psnr_rgb
from .plots import crop_figure, rd_plot

CROP_IMAGE = "kodim23.png"
CROP_SIZE = 256
CROP_BPP = 0.25
CROP_CODECS = ("selic", "avif-444", "avif-420", "jpeg-420")  # the first AVIF found is used


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_point(codec: Codec, image: Image.Image, setting: float, caption: str | None) -> dict[str, Any]:
    """Encode, decode and score one image at one setting."""
    t0 = time.perf_counter()
    data = codec.encode(image, setting, caption)
    t1 = time.perf_counter()
    decoded = codec.decode(data)
    t2 = time.perf_counter()
    ref, out = as_array(image), as_array(decoded)
    if ref.shape != out.shape:
        raise RuntimeError(f"{codec.name}: decoded shape {out.shape} != {ref.shape}")
    ms = ms_ssim_rgb(ref, out)
    return {"setting": setting, "bytes": len(data), "bpp": 8 * len(data) / (image.width * image.height),
            "psnr": psnr_rgb(ref, out), "ms_ssim": ms, "ms_ssim_db": ms_ssim_db(ms),
            "encode_s": t1 - t0, "decode_s": t2 - t1}


def measure_codec(codec: Codec, paths: Sequence[Path], captions: dict[str, str], settings: Sequence[float]
                  ) -> list[dict[str, Any]]:
    points = []
    for i, path in enumerate(paths, 1):
        image = load_rgb(path)
        for s in settings:
            points.append({"image": path.name, **measure_point(codec, image, s, captions.get(path.name))})
        last = points[-1]
        log(f"  {codec.name} {i}/{len(paths)} {path.name}: top setting {last['bpp']:.3f} bpp {last['psnr']:.2f} dB")
    return points


def aggregate(points: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per setting: mean bpp, mean of per-image PSNR and MS-SSIM (dB of the mean MS-SSIM); sorted by bpp."""
    by_setting: dict[float, list[dict[str, Any]]] = {}
    for p in points:
        by_setting.setdefault(p["setting"], []).append(p)
    rows = []
    for setting, group in by_setting.items():
        ms = statistics.fmean(p["ms_ssim"] for p in group)
        rows.append((statistics.fmean(p["bpp"] for p in group), setting, statistics.fmean(p["psnr"] for p in group),
                     ms, ms_ssim_db(ms), len(group)))
    rows.sort()
    keys = ("bpp", "setting", "psnr", "ms_ssim", "ms_ssim_db", "images")
    return {k: [r[i] for r in rows] for i, k in enumerate(keys)}


def bd_matrix(curves: dict[str, dict[str, Any]], metric: str) -> dict[str, dict[str, float]]:
    """BD-rate (%) of every curve (row, test) against every other (column, anchor); NaN where undefined."""
    return {t: {a: (0.0 if t == a else bd_rate_or_nan(ca["bpp"], ca[metric], ct["bpp"], ct[metric]))
                for a, ca in curves.items() if metric in ca}
            for t, ct in curves.items() if metric in ct}


def headline(curves: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """selic against VTM (published) and against itself without captions, with the overlap they share."""
    out: dict[str, Any] = {"paper_claim_bd_rate_vs_vtm": published.PAPER_CLAIM_VS_VTM}
    pairs = {"selic_vs_vtm": ("selic", "vtm"), "selic_nocaption_vs_vtm": ("selic-nocaption", "vtm"),
             "semantic_gain": ("selic", "selic-nocaption")}
    for key, (test, anchor) in pairs.items():
        if test in curves and anchor in curves:
            t, a = curves[test], curves[anchor]
            entry = {"test": test, "anchor": anchor,
                     "bd_rate_psnr": bd_rate_or_nan(a["bpp"], a["psnr"], t["bpp"], t["psnr"]),
                     "bd_rate_ms_ssim_db": bd_rate_or_nan(a["bpp"], a["ms_ssim_db"], t["bpp"], t["ms_ssim_db"]),
                     "psnr_overlap": overlap_fraction(a["psnr"], t["psnr"])}
            try:
                entry["bd_psnr"] = bd_psnr(a["bpp"], a["psnr"], t["bpp"], t["psnr"])
            except ValueError:
                entry["bd_psnr"] = math.nan
            out[key] = entry
    return out


def crops(codecs: dict[str, Codec], points: dict[str, list[dict[str, Any]]], image_name: str, out: Path
          ) -> dict[str, Any] | None:
    """The same crop from selic, AVIF and JPEG near 0.25 bpp on one image, beside the original."""
    paths = [p for p in kodak_paths() if p.name == image_name]
    chosen = [n for n in CROP_CODECS if n in codecs and any(p["image"] == image_name for p in points.get(n, []))]
    chosen = [n for n in chosen if not (n == "avif-420" and "avif-444" in chosen)]
    if not paths or not chosen:
        return None
    image = load_rgb(paths[0])
    captions = kodak_captions()
    box = ((image.width - CROP_SIZE) // 2, (image.height - CROP_SIZE) // 2,
           (image.width + CROP_SIZE) // 2, (image.height + CROP_SIZE) // 2)
    panels = [("original", image.crop(box))]
    record: dict[str, Any] = {"image": image_name, "box": box, "target_bpp": CROP_BPP, "panels": []}
    for name in chosen:
        candidates = [p for p in points[name] if p["image"] == image_name]
        best = min(candidates, key=lambda p: abs(math.log(p["bpp"] / CROP_BPP)))
        codec = codecs[name]
        decoded = codec.decode(codec.encode(image, best["setting"], captions.get(image_name)))
        panels.append((f"{codec.label} {codec.setting} {best['setting']:g}\n{best['bpp']:.3f} bpp, "
                       f"{best['psnr']:.2f} dB (whole image)", decoded.convert("RGB").crop(box)))
        record["panels"].append({"codec": name, "setting": best["setting"], "bpp": best["bpp"], "psnr": best["psnr"]})
    crop_figure(panels, out, f"{image_name}, {CROP_SIZE}x{CROP_SIZE} centre crop, settings closest to "
                             f"{CROP_BPP} bpp for this image")
    return record


def markdown(results: dict[str, Any]) -> str:
    """The tables of rd_kodak.md, built from rd_kodak.json only."""
    codecs, pub = results["codecs"], results["published"]
    quick = " (`--quick`: a reduced sweep of settings)" if results["options"].get("quick") else ""
    lines = [f"Kodak, {len(results['images'])} images{quick}; bpp from whole-file sizes; PSNR and MS-SSIM on RGB, "
             "per image then averaged per setting. Measured on: " + machine_line(results["machine"]), ""]
    if len(results["images"]) < 24:
        lines += [f"> Subset run ({len(results['images'])} of 24 images): comparisons with the published curves, "
                  "which average all 24 images, are not like for like.", ""]
    lines += _headline_lines(results.get("headline", {}))
    lines += ["### Codecs measured here", "",
              md_table(["codec", "library", "fixed settings", "seconds", "measured (UTC)"],
                       [[c["label"], c["library"], _params(c["params"]), c.get("seconds"),
                         c["machine"]["date_utc"] + (" quick" if c.get("quick") else "")] for c in codecs.values()],
                       digits=0), ""]
    for name, reason in results.get("skipped", {}).items():
        lines.append(f"- **{name} skipped**: {reason}")
    for name, c in codecs.items():
        curve = c["curve"]
        lines += ["", f"#### {c['label']} (`{name}`)", "",
                  md_table([c["setting"], "bpp", "PSNR (dB)", "MS-SSIM", "MS-SSIM (dB)", "images"],
                           [[_num(s), b, p, m, md, n] for s, b, p, m, md, n in zip(
                               curve["setting"], curve["bpp"], curve["psnr"], curve["ms_ssim"], curve["ms_ssim_db"],
                               curve["images"], strict=True)], digits=4)]
    lines += ["", f"### Published curves (not measured here; source: {published.SOURCE})", ""]
    lines += [f"- {c['label']}: `{c['file']}`, {len(c['bpp'])} points, {min(c['bpp']):.3f}-{max(c['bpp']):.3f} bpp"
              for c in pub.values()]
    for metric, key in (("PSNR", "bd_rate_psnr"), ("MS-SSIM (dB)", "bd_rate_ms_ssim_db")):
        matrix = results.get(key, {})
        if not matrix:
            continue
        names = list(matrix)
        labels = {**{n: c["label"] for n, c in codecs.items()}, **{n: c["label"] for n, c in pub.items()}}
        lines += ["", f"### BD-rate (%) on {metric}: row (test) against column (anchor)", "",
                  "Negative: the row codec needs fewer bits for the same quality. PCHIP over the overlapping "
                  "quality range; – where the curves do not overlap.", "",
                  md_table(["test \\ anchor", *names],
                           [[f"{labels.get(t, t)}", *[matrix[t].get(a) for a in names]] for t in names], digits=1)]
    return "\n".join(lines) + "\n"


def _headline_lines(h: dict[str, Any]) -> list[str]:
    lines = []
    if "selic_vs_vtm" in h:
        e = h["selic_vs_vtm"]
        lines += [f"**selic vs VTM (published): BD-rate {_pct(e['bd_rate_psnr'])} on PSNR, "
                  f"{_pct(e['bd_rate_ms_ssim_db'])} on MS-SSIM (dB), BD-PSNR {_signed(e['bd_psnr'], ' dB')}** "
                  f"(PSNR-range overlap {e['psnr_overlap']:.0%}; the paper reports {h['paper_claim_bd_rate_vs_vtm']}% "
                  "with its full-size model).", ""]
    else:
        lines += ["selic is not in these results, so there is no headline against VTM: see the skipped codecs, or add "
                  "it with `python -m benchmarks.rd_kodak --codecs selic,selic-nocaption --merge`.", ""]
    if "semantic_gain" in h:
        e = h["semantic_gain"]
        lines += [f"Semantic gain (captions vs caption=False, same model): BD-rate {_pct(e['bd_rate_psnr'])} on PSNR, "
                  f"{_pct(e['bd_rate_ms_ssim_db'])} on MS-SSIM (dB).", ""]
    return lines


def _signed(value: float | None, unit: str) -> str:
    """None/NaN is how JSON and bdrate say "undefined"."""
    return "undefined (the curves do not overlap)" if value is None or math.isnan(value) else f"{value:+.2f}{unit}"


def _pct(value: float) -> str:
    return _signed(value, "%")


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _num(value: float) -> str:
    return f"{value:g}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=0, help="use the first N Kodak images (default: all 24)")
    p.add_argument("--codecs", default=",".join(ALL_NAMES), help=f"comma-separated, from: {', '.join(ALL_NAMES)}")
    p.add_argument("--model", default="small", help="selic preset name or a .safetensors path")
    p.add_argument("--quick", action="store_true", help="fewer settings per codec (and 4 images unless --images)")
    p.add_argument("--merge", action="store_true",
                   help="keep the other codecs already in the results file (same image set) and replace these")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: MS-SSIM and selic per image; 0 = torch default)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--crop-image", default=CROP_IMAGE)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    set_threads(args.threads)
    paths = kodak_paths(args.images or (4 if args.quick else None))
    names = [n.strip() for n in args.codecs.split(",") if n.strip()]
    json_path = args.out / "rd_kodak.json"
    previous = read_json(json_path) if args.merge and json_path.exists() else None
    if previous is not None and previous["images"] != [p.name for p in paths]:
        raise SystemExit(f"--merge: {json_path} was measured on other images; rerun without --merge")
    codecs, skipped = build(names, args.model)
    for name, reason in skipped.items():
        log(f"skipping {name}: {reason}")
    captions = kodak_captions()
    options = {"quick": args.quick, "model": args.model, "threads": torch.get_num_threads(),
               "precision": os.environ.get("SELIC_PRECISION") or "auto"}  # of selic's transforms (engine)
    results: dict[str, Any] = {"benchmark": "rd_kodak", "machine": machine(), "images": [p.name for p in paths],
                               "options": options, "codecs": {}, "skipped": skipped}
    if previous is not None:
        results["codecs"] = {n: c for n, c in previous["codecs"].items() if n not in names}
        results["skipped"] = {**{n: r for n, r in previous.get("skipped", {}).items() if n not in names}, **skipped}
    points: dict[str, list[dict[str, Any]]] = {}
    for codec in codecs:
        log(f"{codec.name}: {codec.library}")
        t0 = time.perf_counter()
        settings = codec.quick_settings if args.quick else codec.settings
        points[codec.name] = measure_codec(codec, paths, captions, settings)
        results["codecs"][codec.name] = {**codec.describe(), "seconds": time.perf_counter() - t0,
                                         "machine": results["machine"], "quick": args.quick,
                                         "curve": aggregate(points[codec.name]),
                                         "points": points[codec.name]}
    pub, missing = published.load_many()
    results["published"] = pub
    results["published_missing"] = missing
    curves = {**{n: c["curve"] for n, c in results["codecs"].items()}, **pub}
    results["bd_rate_psnr"] = bd_matrix(curves, "psnr")
    results["bd_rate_ms_ssim_db"] = bd_matrix(curves, "ms_ssim_db")
    results["headline"] = headline(curves)
    all_points = {n: c["points"] for n, c in results["codecs"].items()}
    built = {c.name: c for c in codecs}
    extra, _ = build([n for n in CROP_CODECS if n in all_points and n not in built], args.model)
    built.update({c.name: c for c in extra})
    results["crops"] = crops(built, all_points, args.crop_image, args.out / "crops_025bpp.png")
    return results


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """JSON, Markdown and the two RD plots, all from the results dict."""
    write_json(out / "rd_kodak.json", results)
    (out / "rd_kodak.md").write_text("# Rate-distortion on Kodak\n\n" + markdown(results), encoding="utf-8")
    measured = {n: {"label": c["label"], **c["curve"]} for n, c in results["codecs"].items()}
    where = f"Kodak ({len(results['images'])} images); dashed: published (CompressAI repo @ 869a9f5), not measured here"
    rd_plot(measured, results["published"], "psnr", out / "rd_psnr.png", where)
    rd_plot(measured, results["published"], "ms_ssim_db", out / "rd_msssim.png", where)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    write_outputs(results, args.out)
    log(f"wrote {args.out / 'rd_kodak.json'}, rd_kodak.md, rd_psnr.png, rd_msssim.png"
        + (", crops_025bpp.png" if results.get("crops") else ""))


if __name__ == "__main__":
    main()
