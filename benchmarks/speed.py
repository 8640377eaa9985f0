"""Speed and memory of selic: encode/decode time per coding path, idle and under load, and peak memory.

Each configuration (device x image size x semantic path x path x load) runs in its own subprocess, so
that its peak resident memory (getrusage maxrss) is its own and not the largest seen so far. Times are
medians over repeats after a warm-up encode/decode (which also loads MiniLM and, with caption=None, the
default captioner, so their load is not counted; each save still captions and embeds). The semantic paths:
caption=False (the null vector), a given caption (MiniLM embeds it), and caption=None (what a plain
`img.save` does: the default captioner describes the image, then MiniLM).

Paths: "before" is the previous release's coding path rebuilt here (reference convolution for g_s, torch's
default backend for g_a, NCHW, float32, compressai's build_indexes), so before and after are measured in one
run; "float32" and "bfloat16" are today's path at each precision. Load "busy" keeps one other process
spinning on the CPU while timing. "pool" decodes the images through a thread pool of 1-thread decoders.

Cold start: a fresh process that decodes one 64x64 file, beside a fresh process that only imports torch, each
timed from its start to its exit with its peak RSS (what a script, a CLI call or a new worker pays once).

    python -m benchmarks.speed [--model small|PATH] [--images N] [--repeats R] [--large 4000x3000]
    python -m benchmarks.speed --versus V2.safetensors ...  # also another model's idle paths and large image, in the
                                                            # same run, with its decode time against --model's
    python -m benchmarks.speed --cold-start --threads 1    # only the cold start, into the existing speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

import selic_engine  # noqa: F401  (before torch: it sets the OpenMP wait policy, as for any user)
from selic_engine.macs import conv_macs

from .common import (
    REPO,
    RESULTS,
    kodak_captions,
    kodak_paths,
    load_rgb,
    machine,
    machine_line,
    md_table,
    peak_rss_mib,
    read_json,
    set_threads,
    write_json,
)

LARGE_SOURCE = "kodim23.png"
SEMANTIC_PATHS = {False: "caption=False", True: "caption (MiniLM)", None: "caption=None (captioner + MiniLM)"}
STAGES = ("encode_total", "g_a", "encode_entropy_and_prior", "decode_entropy_and_prior", "g_s")
#: Roofline rows: stage name -> its time in STAGES (the prior is timed as the whole entropy decoding).
ROOFLINE = {"g_a": "g_a", "g_s": "g_s", "prior": "decode_entropy_and_prior"}
#: Starts `python -c CODE ARG` and prints its seconds from start to exit, its peak RSS (getrusage) and its exit
#: status. A small process of its own: a child's peak RSS also counts the pages of the process that started it
#: (fork and exec pass them through), and the benchmark's own process holds torch and a model.
LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.posix_spawn(sys.executable, [sys.executable, "-c", *sys.argv[1:]], os.environ)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""
#: Cold-start rows: what each fresh process runs (argv[1] is the .selic file).
COLD_START = {
    "import torch": "import torch",
    "decode a 64x64 file": "import sys, selic_engine; selic_engine.decode(open(sys.argv[1], 'rb').read())",
}


def large_image(size: tuple[int, int]) -> Image.Image:
    """A photo-like image of the requested size: a Kodak image upscaled (Lanczos) to cover it, centre-cropped."""
    src = load_rgb(next(p for p in kodak_paths() if p.name == LARGE_SOURCE))
    scale = max(size[0] / src.width, size[1] / src.height)
    big = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.LANCZOS)
    left, top = (big.width - size[0]) // 2, (big.height - size[1]) // 2
    return big.crop((left, top, left + size[0], top + size[1]))


def previous_path(model: str) -> tuple[Any, Any]:
    """(encode context, decode context) of the previous release's path; patches this process for good."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    from selic_engine import engine
    from selic_engine.entropy import ChannelARM
    from selic_engine.model import selic

    class ReferenceConv(TorchFunctionMode):  # the release's decode convolution: ATen's reference kernel
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (F.conv2d, torch.conv2d):
                b = dict(zip(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), args,
                             strict=False)) | kwargs
                pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
                w = b["weight"]
                return torch.ops.aten._slow_conv2d_forward(b["input"], w, tuple(w.shape[-2:]), b.get("bias"),
                                                           pair(b.get("stride", 1)), pair(b.get("padding", 0)))
            return func(*args, **kwargs)

    ChannelARM.indexes = lambda self, scales: self.gaussian_conditional.build_indexes(scales)
    selic._coding_layout = lambda t: t  # NCHW windows
    for name in ("g_a", "g_s"):
        getattr(engine.get_engine(model).model, name).to(memory_format=torch.contiguous_format)

    def with_conv(mode: Any) -> Any:
        @contextlib.contextmanager
        def patched():
            saved = engine.onednn_conv
            engine.onednn_conv = mode
            try:
                yield
            finally:
                engine.onednn_conv = saved
        return patched

    return with_conv(contextlib.nullcontext), with_conv(ReferenceConv)


@contextlib.contextmanager
def busy_cpu(load: str):
    """One other process spinning on the CPU while the body runs (load "busy"), as on a shared machine."""
    if load != "busy":
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        yield
    finally:
        proc.kill()
        proc.wait()


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process: warm up, then time every image `repeats` times."""
    import torch

    import selic_engine as se

    set_threads(cfg["threads"])
    device = cfg["device"]
    captions = kodak_captions()
    if cfg["size"] == "kodak":
        images = [(p.name, load_rgb(p)) for p in kodak_paths(cfg["images"] or None)]
    else:
        w, h = cfg["large"]
        images = [(f"{LARGE_SOURCE} upscaled to {w}x{h}", large_image((w, h)))]
    rss_start = peak_rss_mib()
    se.get_engine(cfg["model"], device)
    rss_loaded = peak_rss_mib()
    enc_ctx = dec_ctx = contextlib.nullcontext
    precision = cfg["path"] if cfg["path"] in ("float32", "bfloat16") else None
    if cfg["path"] == "before":
        enc_ctx, dec_ctx = previous_path(cfg["model"])
        precision = "float32"

    def caption_for(name: str) -> str | bool | None:
        # True: the Kodak caption (MiniLM embeds it); None: no caption given, so the default captioner runs too
        return captions.get(name.split()[0], "") if cfg["semantic"] else cfg["semantic"]

    def code(name: str, image: Image.Image) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        with enc_ctx():
            data = se.encode(image, cfg["quality"], caption=caption_for(name), model=cfg["model"], device=device,
                             precision=precision)
        t1 = time.perf_counter()
        with dec_ctx():
            se.decode(data, device=device, precision=precision)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return t1 - t0, time.perf_counter() - t1, len(data)

    first = kodak_paths(1)[0]
    code(first.name, load_rgb(first))  # warm-up: loads MiniLM (semantic runs), allocator pools, caches
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if cfg.get("pool"):
        return {**cfg, **pool_throughput(images, cfg, precision), "torch_threads": torch.get_num_threads()}
    if cfg.get("stages"):
        return {**cfg, **stage_times(images[0][1], cfg, precision), "torch_threads": torch.get_num_threads()}
    per_image = []
    with busy_cpu(cfg["load"]):
        for name, image in images:
            runs = [code(name, image) for _ in range(cfg["repeats"])]
            per_image.append({"image": name, "pixels": image.width * image.height,
                              "encode_s": statistics.median(r[0] for r in runs),
                              "decode_s": statistics.median(r[1] for r in runs),
                              "bpp": 8 * runs[0][2] / (image.width * image.height)})
    mpix = sum(p["pixels"] for p in per_image) / 1e6
    out = {**cfg, "per_image": per_image,
           "encode_median_s": statistics.median(p["encode_s"] for p in per_image),
           "decode_median_s": statistics.median(p["decode_s"] for p in per_image),
           "encode_s_per_mpix": sum(p["encode_s"] for p in per_image) / mpix,
           "decode_s_per_mpix": sum(p["decode_s"] for p in per_image) / mpix,
           "rss_before_model_mib": rss_start, "rss_after_model_load_mib": rss_loaded, "peak_rss_mib": peak_rss_mib(),
           "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def pool_throughput(images: list[tuple[str, Image.Image]], cfg: dict[str, Any], precision: str | None
                    ) -> dict[str, Any]:
    """Decoded images per second: one decoder at the configured threads vs `pool` 1-thread decoders at once."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    import selic_engine as se

    files = [se.encode(img, cfg["quality"], caption=False, model=cfg["model"], precision=precision)
             for _, img in images]
    t0 = time.perf_counter()
    for data in files:
        se.decode(data, precision=precision)
    single = len(files) / (time.perf_counter() - t0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's intra-op pool is process-wide: each pooled decode then runs on one thread
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg["pool"]) as pool:
        list(pool.map(lambda d: se.decode(d, precision=precision), files))
    pooled = len(files) / (time.perf_counter() - t0)
    return {"single_decoder_images_per_s": single, "single_decoder_threads": threads,
            "pool_images_per_s": pooled, "images_decoded": len(files)}


def conv_peak_gflops(channels: int, size: tuple[int, int], dtype: Any, repeats: int) -> float:
    """What this CPU's oneDNN reaches on g_s's dominant layer alone (3x3, channels -> channels, at half the
    image size, the coding path's layout and precision): the roofline the transforms are measured against."""
    import torch

    from selic_engine.model.determinism import onednn_conv

    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(1, channels, *size).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with torch.no_grad(), onednn_conv(), autocast:
        return 2 * conv_macs(conv, x) / _median_time(lambda: conv(x), repeats) / 1e9


def float64_gemm_gflops(rows: int, depth: int, cols: int, repeats: int) -> float:
    """What this CPU's BLAS reaches on one float64 matrix product (rows x depth) @ (depth x cols): the roofline
    for the prior, which stays in float64 so that every machine picks the same probability tables."""
    import torch

    a, b = torch.randn(rows, depth, dtype=torch.float64), torch.randn(depth, cols, dtype=torch.float64)
    return 2 * rows * depth * cols / _median_time(lambda: a @ b, repeats) / 1e9


def _median_time(fn: Any, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    runs = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs[1:])


def stage_times(image: Image.Image, cfg: dict[str, Any], precision: str | None) -> dict[str, Any]:
    """Where one image's time goes: g_a, the rest of encoding, entropy decoding with the prior, g_s (medians)."""
    import torch

    import selic_engine as se
    from selic_engine.container import unpack
    from selic_engine.engine import transform_dtype
    from selic_engine.imaging import split
    from selic_engine.model.determinism import onednn_conv
    from selic_engine.model.tiling import analyze_tiled, synthesize_tiled

    engine = se.get_engine(cfg["model"])
    model, dtype = engine.model, transform_dtype(precision, engine.device)
    x = split(image)[0]
    q = torch.tensor([cfg["quality"]])
    f = unpack(se.encode(image, cfg["quality"], caption=False, model=cfg["model"], precision=precision))
    geometry = model.geometry
    z_shape, band_rows = geometry.z_shape((image.height, image.width)), geometry.coding_band_rows

    def timed(fn: Any) -> float:
        def coding() -> None:
            with torch.no_grad(), onednn_conv():
                fn()

        return _median_time(coding, cfg["repeats"])

    y_hat = model.latent_codec.decompress(f.z_stream, f.y_stream, z_shape, band_rows)[0]
    t_encode = timed(lambda: model.compress(x, cfg["quality"], dtype=dtype))
    t_g_a = timed(lambda: analyze_tiled(lambda w: model.analyze(w, q, None, None, dtype), x, model.config.M, geometry))
    t_g_s = timed(lambda: synthesize_tiled(lambda w: model.synthesize(w, q, dtype), y_hat, (image.height, image.width),
                                           geometry))
    t_prior = timed(lambda: model.latent_codec.decompress(f.z_stream, f.y_stream, z_shape, band_rows))
    codec, c = model.latent_codec, model.config
    y64 = y_hat.double()  # shapes, not values, decide the counts
    macs = {"g_a": conv_macs(model.g_a, x.float()), "g_s": conv_macs(model.g_s, y_hat.float()),
            "prior": conv_macs(codec.h_s, y64.new_zeros(1, c.Nz, *z_shape))
            + conv_macs(codec.charm, y64, y64, y64)}
    peak = conv_peak_gflops(c.N, (image.height // 2, image.width // 2), dtype, cfg["repeats"])
    # the widest ChARM layer (3x3, 2M -> hidden) as the matrix product it is, at the latent's size
    prior_peak = float64_gemm_gflops(c.charm_hidden, 9 * 2 * c.M, y_hat.shape[-2] * y_hat.shape[-1], cfg["repeats"])
    times = {"g_a": t_g_a, "g_s": t_g_s, "prior": t_prior}
    return {"stages_s": {"encode_total": t_encode, "g_a": t_g_a, "encode_entropy_and_prior": t_encode - t_g_a,
                         "decode_entropy_and_prior": t_prior, "g_s": t_g_s},
            "transform_dtype": str(dtype).removeprefix("torch."), "conv_gmacs": {k: v / 1e9 for k, v in macs.items()},
            "conv_gflops": {k: 2 * macs[k] / times[k] / 1e9 for k in macs} | {"one_layer_peak": peak,
                                                                              "prior_one_layer_peak": prior_peak}}


def fresh_process(code: str, arg: str, threads: int) -> tuple[float, float]:
    """(seconds from start to exit, peak RSS in MiB) of `python -c code arg` (OMP_NUM_THREADS=threads if set),
    started by LAUNCHER."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, code, arg], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True)
    seconds, maxrss, status = proc.stdout.split()[-3:]
    if status != "0":
        raise RuntimeError(f"speed: cold start {code!r} failed: {proc.stderr.strip()[-500:]}")
    return float(seconds), peak_rss_mib(int(maxrss))


def cold_start(model: str, repeats: int, threads: int) -> dict[str, Any]:
    """Each COLD_START row in `repeats` fresh processes, alternating (medians), with the machine they ran on."""
    import selic_engine as se
    from selic_engine.testing import photo_like

    set_threads(threads)  # this process only makes the file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "64x64.selic"
        path.write_bytes(se.encode(photo_like(64, 64), 4, caption=False, model=model))
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in COLD_START}
        for _ in range(repeats):
            for name, code in COLD_START.items():
                runs[name].append(fresh_process(code, str(path), threads))
    rows = {name: {"seconds": statistics.median(r[0] for r in rs), "peak_rss_mib": statistics.median(r[1] for r in rs)}
            for name, rs in runs.items()}
    return {"machine": machine(), "model": model, "threads": threads, "repeats": repeats, "rows": rows}


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a subprocess and return its JSON result (or the error it hit)."""
    cmd = [sys.executable, "-m", "benchmarks.speed", "--worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        return {**cfg, "error": lines[-1] if lines else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_stats(model: str) -> dict[str, Any]:
    """Parameter counts (all, encoder-only, decoder), weights file size, and the text embedder's size."""
    import selic_engine as se
    from selic_engine.weights import resolve_weights

    path = resolve_weights(model)
    engine = se.get_engine(model, "cpu")
    net = engine.model
    groups: dict[str, int] = {}
    sides: dict[str, int] = {"encoder": 0, "decoder": 0}
    for name, p in net.named_parameters():
        groups[name.split(".", 1)[0]] = groups.get(name.split(".", 1)[0], 0) + p.numel()
        sides[net.module_group(name)] += p.numel()
    stats: dict[str, Any] = {
        "weights_file": path.name, "weights_bytes": path.stat().st_size, "model_id": engine.model_id,
        "config": json.loads(net.config.to_json()), "parameters": sum(groups.values()),
        "encoder_only_parameters": sides["encoder"], "decoder_parameters": sides["decoder"],
        "parameters_by_module": groups}
    if net.config.fusion != "none":
        stats["text_embedder"] = text_embedder_stats()
    return stats


def text_embedder_stats() -> dict[str, Any]:
    """The encoder-side text model (not in the weights file, not needed to decode)."""
    try:
        from transformers import AutoModel

        from selic_engine.semantic.defaults import embedder_from_setting

        e = embedder_from_setting(os.environ.get("SELIC_TEXT_EMBEDDER", "minilm"))
        m = AutoModel.from_pretrained(e.source, local_files_only=True)
        return {"name": e.name, "dim": e.dim, "parameters": sum(p.numel() for p in m.parameters())}
    except (OSError, ImportError, RuntimeError, ValueError) as exc:
        return {"error": str(exc)}


def configs(args: argparse.Namespace, devices: list[str]) -> list[dict[str, Any]]:
    """Before vs today's paths (idle and busy) on Kodak, the semantic path, a thread pool, and the large image."""
    from selic_engine.precision import cpu_has_native_bf16

    w, h = (int(v) for v in args.large.lower().split("x"))
    base = {"model": args.model, "quality": args.quality, "threads": args.threads, "images": args.images,
            "repeats": args.repeats, "large": [w, h], "size": "kodak", "semantic": False, "load": "idle",
            "path": "auto"}
    out = []
    for device in devices:
        paths = ["before", "float32"] + (["bfloat16"] if device != "cpu" or cpu_has_native_bf16() else [])
        for path in paths:
            for load in ("idle", "busy"):
                out.append({**base, "device": device, "path": path, "load": load})
        out.append({**base, "device": device, "semantic": True})
        out.append({**base, "device": device, "semantic": None})
        out.append({**base, "device": device, "stages": True, "images": 1})
        if device == "cpu":
            out.append({**base, "device": device, "pool": args.threads or 2})
        if not args.no_large:
            out.append({**base, "device": device, "size": "large", "repeats": args.large_repeats})
        if args.versus:  # the same idle decodes of the other model, measured in this run (issue 31's speed target)
            other = {**base, "device": device, "model": args.versus}
            out += [{**other, "path": path} for path in paths if path != "before"]
            if not args.no_large:
                out.append({**other, "size": "large", "repeats": args.large_repeats})
    return out


def markdown(results: dict[str, Any]) -> str:
    """speed.md, from speed.json only: the configurations, then the cold start (each where measured)."""
    lines = runs_markdown(results) if "runs" in results else []
    if "cold_start" in results:
        lines += [""] * bool(lines) + cold_start_markdown(results["cold_start"])
    return "\n".join(lines) + "\n"


def cold_start_markdown(cold: dict[str, Any]) -> list[str]:
    """The cold-start table, with the machine it was measured on (it may be measured apart from the rest)."""
    rows = cold["rows"]
    torch_row, decode_row = (rows[name] for name in COLD_START)
    threads = f"OMP_NUM_THREADS={cold['threads']}" if cold["threads"] else "torch's default threads"
    return [f"Cold start: a fresh process from its start to its exit (median of {cold['repeats']}, {threads}, "
            f"model {cold['model']}), measured on: {machine_line(cold['machine'])}.", "",
            md_table(["fresh process", "seconds", "peak RSS (MiB)"],
                     [[name, r["seconds"], r["peak_rss_mib"]] for name, r in rows.items()], digits=2), "",
            f"Decoding adds {decode_row['seconds'] - torch_row['seconds']:.2f} s and "
            f"{decode_row['peak_rss_mib'] - torch_row['peak_rss_mib']:.0f} MiB to torch's own import."]


def runs_markdown(results: dict[str, Any]) -> list[str]:
    """The configurations' tables."""
    m = results["machine"]
    st = results["model"]
    lines = [f"Measured on: {machine_line(m)}.", "",
             f"Model `{st['weights_file']}` (id {st['model_id']}, config {st['config']['name']}, "
             f"fusion {st['config']['fusion']}): {st['parameters'] / 1e6:.2f} M parameters "
             f"({st['encoder_only_parameters'] / 1e6:.2f} M encoder-only, {st['decoder_parameters'] / 1e6:.2f} M "
             f"needed to decode), weights file {st['weights_bytes'] / 2**20:.1f} MiB."]
    te = st.get("text_embedder")
    if te and "parameters" in te:
        lines.append(f"Text embedder (encode side only, not in the weights file): {te['name']}, "
                     f"{te['parameters'] / 1e6:.1f} M parameters, {te['dim']}-d.")
    lines += ["", f"Quality {results['options']['quality']}; medians over {results['options']['repeats']} repeats per "
              "image after a warm-up (large image: "
              f"{results['options']['large_repeats']} repeat(s)); peak RSS of a fresh process per row.", ""]
    rows, pools, stages = [], [], []
    for r in results["runs"]:
        what = "Kodak 768x512" if r["size"] == "kodak" else f"{r['large'][0]}x{r['large'][1]}"
        sem = SEMANTIC_PATHS[r["semantic"]]
        head = [r["device"], Path(r["model"]).stem, what, r["path"], r["load"], sem]
        if "error" in r:
            rows.append([*head, "error: " + r["error"], "", "", "", "", ""])
        elif r.get("stages"):
            stages.append(r)
        elif r.get("pool"):
            pools.append([r["device"], r["images_decoded"], r["single_decoder_threads"],
                          r["single_decoder_images_per_s"], r["pool"], r["pool_images_per_s"]])
        else:
            rows.append([*head, r["encode_median_s"], r["decode_median_s"], r["encode_s_per_mpix"],
                         r["rss_after_model_load_mib"], r["peak_rss_mib"], r.get("cuda_peak_allocated_mib")])
    lines.append(md_table(["device", "model", "image", "path", "load", "semantic path", "encode (s, median)",
                           "decode (s, median)", "encode s/MPix", "RSS after model load (MiB)", "peak RSS (MiB)",
                           "CUDA peak alloc (MiB)"], rows, digits=2))
    if stages:
        lines += ["", "Where the time goes (first Kodak image, path auto, seconds):", "",
                  md_table(["device", *STAGES], [[r["device"], *(r["stages_s"][k] for k in STAGES)] for r in stages],
                           digits=3)]
        roof = []
        for r in (r for r in stages if "conv_gmacs" in r):
            for k, stage in ROOFLINE.items():
                if k not in r["conv_gmacs"]:  # results from before the prior was counted
                    continue
                dtype, peak = ("float64", r["conv_gflops"]["prior_one_layer_peak"]) if k == "prior" else (
                    r["transform_dtype"], r["conv_gflops"]["one_layer_peak"])
                roof.append([r["device"], dtype, k, r["conv_gmacs"][k], r["stages_s"][stage], r["conv_gflops"][k],
                             peak, 2 * r["conv_gmacs"][k] / peak])
        if roof:
            lines += ["", "Each stage against this CPU's convolution speed: every convolution's multiply-accumulates, "
                      "the rate reached, and the rate of the stage's dominant layer timed alone (g_a, g_s: g_s's "
                      "3x3 N -> N at half the image size; prior: h_s and the ChARM nets while entropy decoding, "
                      "whose time includes the rANS decoder, against this CPU's float64 matrix product in the shape "
                      "of the widest ChARM layer); the last column is the time the stage's convolutions would take "
                      "at that rate.",
                      "",
                      md_table(["device", "precision", "stage", "conv GMAC", "time (s)", "GFLOP/s",
                                "one-layer GFLOP/s", "time at that rate (s)"], roof, digits=3)]
    if pools:
        lines += ["", "Throughput, decoding Kodak files (path auto):", "",
                  md_table(["device", "images", "one decoder: threads", "images/s", "pool of 1-thread decoders",
                            "images/s"], pools, digits=2)]
    if "versus_model" in results:
        lines += ["", *versus_markdown(results)]
    if not results.get("cuda_timed"):
        lines += ["", f"GPU: not timed ({results.get('cuda_note')})."]
    return lines


def versus_markdown(results: dict[str, Any]) -> list[str]:
    """--versus: each idle, caption=False decode of the other model against --model's on the same path and image,
    from the same run."""
    base, other = results["options"]["model"], results["options"]["versus"]
    st = results["versus_model"]
    timed = {(r["model"], r["device"], r["size"], r["path"]): r["decode_median_s"] for r in results["runs"]
             if "decode_median_s" in r and r["load"] == "idle" and r["semantic"] is False}
    rows = [[device, "Kodak 768x512" if size == "kodak" else "large", path, timed[(base, device, size, path)],
             seconds, seconds / timed[(base, device, size, path)]]
            for (model, device, size, path), seconds in timed.items()
            if model == other and (base, device, size, path) in timed]
    return [f"Against `{st['weights_file']}` (id {st['model_id']}, config {st['config']['name']}, architecture "
            f"{st['config']['architecture']}): {st['decoder_parameters'] / 1e6:.2f} M parameters needed to decode. "
            "Decode medians, idle, caption=False:", "",
            md_table(["device", "image", "path", f"{Path(base).stem} (s)", f"{Path(other).stem} (s)", "ratio"], rows,
                     digits=3)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", default="small", help="selic preset name or a .safetensors path")
    p.add_argument("--versus", default="", help="another model (preset or path) whose decodes are timed beside")
    p.add_argument("--images", type=int, default=0, help="first N Kodak images (default all 24)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--large", default="6000x4000", help="size of the large test image (24 MP)")
    p.add_argument("--no-large", action="store_true", help="skip the large image")
    p.add_argument("--large-repeats", type=int, default=1)
    p.add_argument("--quality", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--devices", default="", help="comma-separated (default: cpu, plus cuda when present)")
    p.add_argument("--cold-start", action="store_true",
                   help="measure only the cold start and put it into the existing speed.json (and speed.md)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def write(results: dict[str, Any], out: Path) -> None:
    write_json(out / "speed.json", results)
    (out / "speed.md").write_text("# Speed and memory\n\n" + markdown(results), encoding="utf-8")
    print(f"wrote {out / 'speed.json'} and speed.md", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.cold_start:
        path = args.out / "speed.json"
        results = read_json(path) if path.exists() else {"benchmark": "speed"}
        results["cold_start"] = cold_start(args.model, args.repeats, args.threads)
        write(results, args.out)
        return
    import torch

    from selic_engine import WeightsNotFoundError

    try:
        stats = model_stats(args.model)
    except WeightsNotFoundError as exc:
        raise SystemExit(f"speed: no selic weights to time: {exc}") from None
    cuda = torch.cuda.is_available()
    devices = [d for d in args.devices.split(",") if d] or (["cpu", "cuda"] if cuda else ["cpu"])
    runs = []
    for cfg in configs(args, devices):
        print(f"speed: {cfg['device']} {cfg['size']} semantic={cfg['semantic']}", file=sys.stderr, flush=True)
        runs.append(run_config(cfg))
    results = {"benchmark": "speed", "machine": machine(), "model": stats,
               "options": {k: v for k, v in vars(args).items() if k not in ("worker", "out")},
               "cuda_timed": any(d.startswith("cuda") for d in devices),
               "cuda_note": "timed" if cuda else "CUDA is not available on this machine", "runs": runs,
               "cold_start": cold_start(args.model, args.repeats, args.threads)}
    if args.versus:
        results["versus_model"] = model_stats(args.versus)
    write(results, args.out)
    failed = [r for r in runs if "error" in r]
    if failed:
        raise SystemExit(f"speed: {len(failed)} of {len(runs)} configurations failed, e.g. {failed[0]['error']}")


if __name__ == "__main__":
    main()
