"""The `selic` command: compress, decompress, convert, info, demo, train, export, plugins.

compress and decompress check everything they can before any model work (and before torch is
imported): arguments, that every input exists, that no two inputs write the same output, and that
no output exists unless --force. Then each file is done on its own: a failure is reported and the
batch goes on, exiting non-zero with a summary at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from PIL import Image

from .atomic import write_atomic
from .config import DEFAULT_MODEL, TrainConfig
from .container import IMAGE_METADATA
from .saving import SaveOptions, check_quality

SUFFIX = ".selic"
#: What one file can cause (unreadable, damaged, too large for Pillow's limit): reported, and a batch goes on.
FILE_ERRORS = (ValueError, OSError, RuntimeError, Image.DecompressionBombError)
#: The photo `selic demo` uses without an argument: it ships with selic (see selic_engine/data/README.md).
DEMO_PHOTO = Path(__file__).parent / "data" / "astronaut.jpg"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage is one --help away."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _output_format(name: str) -> tuple[str, str]:
    """argparse type for --format: (file suffix, Pillow format) for an extension Pillow can write."""
    suffix = "." + name.lower().lstrip(".")
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        writable = sorted({ext[1:] for ext, f in Image.registered_extensions().items() if f in Image.SAVE})
        raise argparse.ArgumentTypeError(f"Pillow cannot write {name!r}; it writes {', '.join(writable)}")
    return suffix, fmt


def _quality(text: str) -> float:
    """argparse type for -q: the save policy's own check, so that a quality out of range is an argument
    error (exit status 2), refused before any work."""
    try:
        value: object = float(text)
    except ValueError:
        value = text  # check_quality refuses it in the words it uses for every bad quality
    try:
        return check_quality(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _files(patterns: list[str], example: str) -> list[Path]:
    """The files the arguments name, in order, each once.

    A folder named directly is refused rather than guessed at (which files, how deep?); folders that a
    wildcard happens to match are passed over, since the pattern names files.
    """
    files: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            raise SystemExit(f"selic: {pattern} is a folder; name its files, e.g. '{path / example}' "
                             f"('{path / '**' / example}' reaches sub-folders too)")
        found = [m for m in map(Path, sorted(glob.glob(pattern, recursive=True)) or [pattern]) if m.is_file()]
        if not found:
            raise SystemExit(f"selic: no file matches {pattern!r}")
        files.update(dict.fromkeys(found))
    return list(files)


def _some(paths: list[Path]) -> str:
    return ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _plan(args: argparse.Namespace, suffix: str, example: str) -> dict[Path, Path]:
    """{input: output}, refused at once if two inputs would write one output, an output would replace
    an input, or an output exists without --force. Creates the -o folder (and its parents)."""
    out_dir: Path | None = args.output_dir
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"selic: -o {out_dir} is a file, not a folder")
    jobs = {src: (out_dir or src.parent) / (src.stem + suffix) for src in _files(args.inputs, example)}
    writers: dict[Path, list[Path]] = {}
    for src, dst in jobs.items():
        writers.setdefault(dst.resolve(), []).append(src)
    inputs = {src.resolve() for src in jobs}
    for dst, srcs in writers.items():
        if len(srcs) > 1:
            both = "both" if len(srcs) == 2 else "all"
            raise SystemExit(f"selic: {' and '.join(map(str, srcs))} would {both} be written to {jobs[srcs[0]]}; "
                             "rename one or send them to different folders (-o)")
        if dst in inputs:
            raise SystemExit(f"selic: {srcs[0]} would be written over its own input {jobs[srcs[0]]}")
    existing = [dst for dst in jobs.values() if dst.exists()]
    if existing and not args.force:
        raise SystemExit(f"selic: {_some(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                         "pass --force to overwrite")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    return jobs


def _batch(jobs: dict[Path, Path], desc: str, work: Callable[[Path, Path], str]) -> None:
    """work(src, dst) -> the line to print, for each job under one progress bar.

    Lines go through tqdm.write, so they never land in the middle of the bar. A file that fails is
    reported and the rest go on; the command then exits non-zero with a summary. Ctrl-C stops it.
    """
    from tqdm import tqdm

    failed: list[Path] = []
    for src, dst in tqdm(jobs.items(), desc=desc, unit="img", total=len(jobs), disable=len(jobs) < 2):
        try:
            line = work(src, dst)
        except FILE_ERRORS as exc:
            failed.append(src)
            tqdm.write(f"selic: {src}: {exc}", file=sys.stderr)
        else:
            tqdm.write(line, file=sys.stdout)
    if failed:
        raise SystemExit(f"selic: {len(failed)} of {len(jobs)} files failed: {_some(failed)}")


def cmd_compress(args: argparse.Namespace) -> None:
    jobs = _plan(args, SUFFIX, "*.jpg")
    options = SaveOptions(args.quality, args.max_bytes, args.bpp, False if args.no_caption else args.caption,
                          args.store_caption or None, args.model, args.device)
    from .engine import get_engine

    get_engine(args.model, args.device)  # a missing model or device fails once, not once per file
    _batch(jobs, "compress", lambda src, dst: compress_file(src, dst, options))


def compress_file(src: Path, dst: Path, options: SaveOptions) -> str:
    """One image file -> dst, written completely or not at all; returns the line `selic compress` prints."""
    from .saving import encode_with_options

    with Image.open(src) as img:
        data = encode_with_options(img, options)
        bpp = 8 * len(data) / (img.width * img.height)
    write_atomic(dst, lambda tmp: tmp.write_bytes(data))
    return f"{src} -> {dst}: {len(data)} bytes, {bpp:.3f} bpp"


def cmd_decompress(args: argparse.Namespace) -> None:
    suffix, fmt = args.format
    jobs = _plan(args, suffix, "*.selic")
    _batch(jobs, "decompress", lambda src, dst: decompress_file(src, dst, fmt, args.device))


def decompress_file(src: Path, dst: Path, fmt: str, device: str | None = None) -> str:
    """One .selic file -> dst in the Pillow format `fmt`, with its ICC profile, EXIF and XMP, written completely
    or not at all; returns the line `selic decompress` prints. A damaged file is refused before torch loads."""
    from .decoding import decode

    image = decode(src.read_bytes(), device=device)
    save_info = {k: image.info[k] for k in IMAGE_METADATA if image.info.get(k)}
    write_atomic(dst, lambda tmp: image.save(tmp, format=fmt, **save_info))
    return f"{src} -> {dst}"


def cmd_convert(args: argparse.Namespace) -> None:
    """Files written with other weights (development ones, which no release keeps) -> files for this release's
    decoder: decoded with --from-weights, re-encoded with --model at the file's quality, metadata and stored
    caption kept."""
    jobs = _plan(args, SUFFIX, "*.selic")
    from .container import info, unpack
    from .engine import get_engine
    from .saving import encode_with_options

    source = get_engine(args.from_weights, args.device)  # a missing or bad weights file fails once
    get_engine(args.model, args.device)

    def work(src: Path, dst: Path) -> str:
        f = unpack(src.read_bytes())
        if f.header.model_id != source.model_id:
            raise ValueError(f"it needs decoder {f.header.model_id}, and {args.from_weights} holds decoder "
                             f"{source.model_id}")
        image = source.decode_file(f)
        image.info.update(info(f.header, f.metadata))
        data = encode_with_options(image, SaveOptions(quality=f.header.quality, model=args.model, device=args.device))
        write_atomic(dst, lambda tmp: tmp.write_bytes(data))
        return f"{src} -> {dst}: {len(data)} bytes, decoder {get_engine(args.model, args.device).model_id}"

    _batch(jobs, "convert", work)


def cmd_info(args: argparse.Namespace) -> None:
    """One JSON line per file; a file that fails is named and the rest go on, as in compress."""
    from .container import unpack
    from .weights import released_decoders

    versions = {r.model_id: r.version for r in released_decoders()}

    def work(src: Path, _: Path) -> str:
        data = src.read_bytes()
        f = unpack(data)
        h = f.header
        info = {"file": str(src), "width": h.width, "height": h.height, "mode": h.mode, "quality": h.quality,
                "model": h.model_id, "bytes": len(data), "bpp": round(8 * len(data) / (h.width * h.height), 4),
                "metadata": sorted(f.metadata), "decoder": _decoder_label(f, versions)}
        if "caption" in f.metadata:
            info["caption"] = f.metadata["caption"].decode("utf-8", "replace")
        return json.dumps(info)

    _batch({src: src for src in _files(args.inputs, "*.selic")}, "info", work)


def _decoder_label(f: Any, versions: dict[str, int]) -> str:
    """'v1', or why there is no version: a newer release's decoder, or development weights."""
    if f.decoder is not None:
        known = f.decoder.version in versions.values()
        return f"v{f.decoder.version}" + ("" if known else f" (newer than this selic; written by {f.decoder.writer})")
    version = versions.get(f.header.model_id)
    return f"v{version}" if version else "unreleased (development weights)"


def cmd_demo(args: argparse.Namespace) -> None:
    """Compress and decompress one real photo with the shipped model; print size, bpp, PSNR and times."""
    import numpy as np

    from . import decode, encode

    with Image.open(args.image or DEMO_PHOTO) as source:
        img = source.convert("RGB")
    name = args.image or f"{DEMO_PHOTO.name} ({img.width}x{img.height}, NASA, public domain)"
    for q in args.quality:
        t0 = time.perf_counter()
        blob = encode(img, q, args.caption or None, model=args.model, device=args.device)
        t1 = time.perf_counter()
        out = decode(blob, device=args.device)
        t2 = time.perf_counter()
        a = np.asarray(img, dtype=np.float64)
        b = np.asarray(out.convert("RGB"), dtype=np.float64)
        psnr = 10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-12))
        print(f"{name}  q={q:g}: {len(blob)} bytes, {8 * len(blob) / (img.width * img.height):.3f} bpp, "
              f"PSNR {psnr:.2f} dB, encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s")
    if args.output:
        Path(args.output).write_bytes(blob)
        print(f"wrote {args.output}")


def _train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (batch_size -> --batch-size), so that a new field is a new flag."""
    p.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=f"(default {f.default})")
        elif typing.get_origin(kind) is typing.Literal:
            p.add_argument(flag, choices=typing.get_args(kind), default=None, help=f"(default {f.default!r})")
        else:
            p.add_argument(flag, type=kind, default=None, help=f"(default {f.default!r})")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run `selic train` asks for: the fields of --config, overridden by the flags given."""
    values = json.loads(args.config.read_text()) if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> None:
    """Train until the config's steps (or minutes) and print the last checkpoint's path."""
    from .training.loop import train

    print(train(train_config(args)))


def cmd_export(args: argparse.Namespace) -> None:
    """A training checkpoint's model (training's business) -> shipped weights and manifest entry (weights')."""
    from .training.checkpoint import trained_model
    from .weights.files import export

    model, history = trained_model(args.checkpoint, args.preset, args.raw)
    mid = export(model, args.output, history, args.float16)
    print(f"wrote {args.output} (model id {mid})")


def cmd_plugins(args: argparse.Namespace) -> None:
    from .plugins import describe

    print(json.dumps(describe(), indent=2))


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="selic",
        description="SELIC learned image codec: compress photos to .selic files, decompress them back, "
        "inspect them, or train the model.",
        epilog="Examples:\n  selic compress photo.jpg -q 5\n"
        "  selic compress 'pics/*.png' -o out/ --caption 'a red barn'\n"
        "  selic decompress out/*.selic --format png\n  selic info out/photo.selic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: $SELIC_DEVICE, else CUDA if present)")
    batch = argparse.ArgumentParser(add_help=False)
    batch.add_argument("inputs", nargs="+", help="files or glob patterns (quote them; '**' reaches sub-folders)")
    batch.add_argument("-o", "--output-dir", type=Path,
                       help="where to write, created if missing (default: next to each input)")
    batch.add_argument("--force", action="store_true", help="overwrite outputs that already exist")

    c = sub.add_parser("compress", parents=[common, batch], help="images -> .selic files")
    c.add_argument("-q", "--quality", type=_quality,
                   help="1 (smallest) .. 8 (best), fractional ok; default 4, or the cap of a size target")
    c.add_argument("--max-bytes", type=int, help="the largest quality whose file fits in this many bytes")
    c.add_argument("--bpp", type=float, help="the largest quality whose file fits in this many bits per pixel")
    said = c.add_mutually_exclusive_group()
    said.add_argument("--caption", help="describe the image yourself instead of running the captioner")
    said.add_argument("--no-caption", action="store_true", help="skip the semantic branch")
    c.add_argument("--store-caption", action="store_true", help="keep the caption text in the file")
    c.add_argument("--model", default=DEFAULT_MODEL, help="preset name of shipped weights, or a .safetensors path")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", parents=[common, batch], help=".selic files -> PNG (or another format)")
    d.add_argument("--format", type=_output_format, default="png",
                   help="output file type Pillow writes, by extension (png, jpg, tiff, webp, ...)")
    d.set_defaults(func=cmd_decompress)

    v = sub.add_parser("convert", parents=[common, batch],
                       help="re-encode .selic files written with other (development) weights for this release")
    v.add_argument("--from-weights", type=Path, required=True, help="the .safetensors weights that wrote the files")
    v.add_argument("--model", default=DEFAULT_MODEL, help="the weights to re-encode with (default: the shipped ones)")
    v.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="print the header of .selic files as JSON lines")
    i.add_argument("inputs", nargs="+")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("demo", parents=[common], help="round-trip a real photo with the shipped model")
    m.add_argument("image", nargs="?", help="your photo (default: the astronaut photo shipped with selic)")
    m.add_argument("-q", "--quality", type=_quality, nargs="+", default=[2.0, 5.0])
    m.add_argument("--caption", default="")
    m.add_argument("--model", default=DEFAULT_MODEL)
    m.add_argument("--output", help="also write the last .selic file here")
    m.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train, resume or adapt a model (see `selic train --help`)",
                       description="Train a SELIC model on a folder of photos with captions.tsv. "
                       "Flags override the fields of --config (a JSON file of TrainConfig fields).")
    _train_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export", help="checkpoint -> shipped .safetensors weights with entropy tables")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("-o", "--output", type=Path, required=True)
    e.add_argument("--preset", help="refuse the checkpoint unless its config is this preset")
    e.add_argument("--float16", action="store_true", help="store the weights in half precision (half the file)")
    e.add_argument("--raw", action="store_true", help="export the last step's weights, not their moving average")
    e.set_defaults(func=cmd_export)

    pl = sub.add_parser("plugins", help="the active captioner and text embedder, why, and the loaded plugins")
    pl.set_defaults(func=cmd_plugins)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # The command's own bar is the progress display: no loading bars from transformers / huggingface_hub.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:
        raise SystemExit(f"selic: {exc}") from None


if __name__ == "__main__":
    main()
