"""What the semantic branch costs on this machine's CPU: captioning (BLIP), text embedding (MiniLM), fusion.

The decoder never pays any of it: the caption only shapes the latent that the encoder writes.
`caption=False` still runs the fusion module (with the learned null vector), so the encode-time
difference "caption vs caption=False" is the text-embedding cost; the fusion module is timed on
its own as well.

    python -m benchmarks.semantic_cost [--repeats 5] [--threads 1] [--image PATH]

One torch thread by default: on a shared, busy CPU more threads mostly measure contention.

Writes benchmarks/results/semantic_cost.json and semantic_cost.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import (
    KODAK,
    RESULTS,
    kodak_captions,
    load_rgb,
    machine,
    machine_line,
    md_table,
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


def caption_cost(image: Image.Image, repeats: int) -> dict[str, Any]:
    """BLIP load and caption time, if BLIP is available locally (it is never downloaded)."""
    from selic_engine.semantic.defaults import DEFAULT_BLIP, BlipCaptioner

    captioner = BlipCaptioner(os.environ.get("SELIC_CAPTIONER", DEFAULT_BLIP))
    t0 = time.perf_counter()
    text = captioner.caption(image)
    if captioner.unavailable:
        return {"model": captioner.source, "available": False, "reason": captioner.unavailable}
    return {"model": captioner.source, "available": True, "first_call_s": time.perf_counter() - t0, "caption": text,
            "caption_s": median_time(lambda: captioner.caption(image), repeats, warmup=0)}


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
        from selic_engine.model import SelicModel

        model = SelicModel(se.preset("small"))
        model.update(force=True)
        return se.register_model(model.eval(), "cpu"), "small preset, random weights (no shipped weights)"


def fusion_cost(image: Image.Image, caption: str, repeats: int) -> dict[str, Any]:
    """Encode time with a caption vs caption=False, and the fusion module against the analysis transform."""
    import torch

    from selic_engine import imaging, semantic

    engine, which = codec_model()
    encode = engine.encode
    with_caption, without, embed = median_times(
        [lambda: encode(image, 4, caption), lambda: encode(image, 4, False),
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
            "caption_overhead_s": with_caption - without, "embed_via_hook_s": embed, "analysis_g_a_s": g_a,
            "fusion_module_s": fusion, "fusion_share_of_encode": fusion / without}


def markdown(result: dict[str, Any]) -> str:
    cap, emb, fus = result["caption"], result["embedding"], result["fusion"]
    w, h = result["image_size"]
    blip = (md_table(["BLIP", "first call (load + caption) s", "caption s", "caption"],
                     [[cap["model"], cap["first_call_s"], cap["caption_s"], cap["caption"]]])
            if cap["available"] else f"BLIP captioning: not available here ({cap['reason']}).")
    return "\n\n".join([
        "# Semantic-branch cost (encoder side only)",
        f"Image: {result['image']} ({w}x{h}), quality 4, CPU, {result['machine']['torch_threads']} torch thread(s), "
        f"median of {result['repeats']} runs. "
        f"Machine: {machine_line(result['machine'])}.",
        "## Captioning\n\n" + blip,
        "## Text embedding\n\n" + md_table(
            ["embedder", "D", "first call (load) s", "one caption s", "per caption, batch of 32, s"],
            [[emb["model"], emb["dim"], emb["first_call_with_load_s"], emb["one_caption_s"],
              emb["per_caption_in_batch_of_32_s"]]], digits=4),
        "## Fusion\n\n" + f"Model: {fus['model']} (fusion: {fus['fusion_mode']}).\n\n" + md_table(
            ["encode with caption s", "encode caption=False s", "difference s", "embedding via hook s", "g_a s",
             "fusion module s", "fusion / encode"],
            [[fus["encode_with_caption_s"], fus["encode_caption_false_s"], fus["caption_overhead_s"],
              fus["embed_via_hook_s"], fus["analysis_g_a_s"], fus["fusion_module_s"], fus["fusion_share_of_encode"]]],
            digits=4)
        + "\n\n`caption=False` still runs the fusion module with the learned null vector, so the expected difference "
        "is the text embedding of one caption (timed alone in the next column); on a busy machine the run-to-run "
        "noise of a whole encode can be larger than that. Decoding never runs any of this.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--image", type=Path)
    args = p.parse_args(argv)
    set_threads(args.threads)
    image, name, caption = test_image(args.image)
    result = {"image": name, "image_size": list(image.size), "caption_text": caption, "repeats": args.repeats,
              "caption": caption_cost(image, args.repeats), "embedding": embedding_cost(caption, args.repeats),
              "fusion": fusion_cost(image, caption, args.repeats), "machine": machine()}
    write_json(RESULTS / "semantic_cost.json", result)
    (RESULTS / "semantic_cost.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
