"""The `selic` command: compress, decompress, info, demo, train, export, plugins."""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .config import DEFAULT_QUALITY

SUFFIX = ".selic"
#: The photo `selic demo` uses without an argument: it ships with selic (see selic_engine/data/README.md).
DEMO_PHOTO = Path(__file__).parent / "data" / "astronaut.jpg"


def _expand(patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches and not Path(pattern).exists():
            raise SystemExit(f"selic: no file matches {pattern!r}")
        files += [Path(m) for m in (matches or [pattern]) if Path(m).is_file()]
    return files


def _target(src: Path, out_dir: Path | None, suffix: str) -> Path:
    return (out_dir or src.parent) / (src.stem + suffix)


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp_path) then rename: a failure leaves neither a partial file nor a temporary one behind."""
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _progress(items: list[Path], desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", disable=len(items) < 2)


def cmd_compress(args: argparse.Namespace) -> None:
    from PIL import Image

    from . import encode

    caption = False if args.no_caption else args.caption
    for src in _progress(_expand(args.inputs), "compress"):
        with Image.open(src) as img:
            meta = {k: img.info[k] for k in ("icc_profile", "exif", "xmp") if img.info.get(k)}
            meta = {k: v.encode() if isinstance(v, str) else v for k, v in meta.items()}
            data = encode(img, args.quality, caption, model=args.model, device=args.device,
                          store_caption=args.store_caption, metadata=meta)
            dst = _target(src, args.output_dir, SUFFIX)
            _write_atomic(dst, lambda tmp, data=data: tmp.write_bytes(data))
            print(f"{src} -> {dst}: {len(data)} bytes, {8 * len(data) / (img.width * img.height):.3f} bpp")


def cmd_decompress(args: argparse.Namespace) -> None:
    from . import decode

    fmt = args.format.upper().replace("JPG", "JPEG")
    for src in _progress(_expand(args.inputs), "decompress"):
        image = decode(src.read_bytes(), device=args.device)
        dst = _target(src, args.output_dir, "." + args.format)
        save_info = {k: image.info[k] for k in ("icc_profile", "exif") if image.info.get(k)}
        _write_atomic(dst, lambda tmp, im=image, kw=save_info: im.save(tmp, format=fmt, **kw))
        print(f"{src} -> {dst}")


def cmd_info(args: argparse.Namespace) -> None:
    from .container import unpack

    for src in _expand(args.inputs):
        data = src.read_bytes()
        f = unpack(data)
        h = f.header
        info = {"file": str(src), "width": h.width, "height": h.height, "mode": h.mode, "quality": h.quality,
                "model": h.model_id, "bytes": len(data), "bpp": round(8 * len(data) / (h.width * h.height), 4),
                "metadata": sorted(f.metadata)}
        if "caption" in f.metadata:
            info["caption"] = f.metadata["caption"].decode("utf-8", "replace")
        print(json.dumps(info))


def cmd_demo(args: argparse.Namespace) -> None:
    """Compress and decompress one real photo with the shipped model; print size, bpp, PSNR and times."""
    import numpy as np
    from PIL import Image

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


def cmd_export(args: argparse.Namespace) -> None:
    from .training.loop import export

    mid = export(args.checkpoint, args.output, args.preset, args.float16, args.raw)
    print(f"wrote {args.output} (model id {mid})")


def cmd_plugins(args: argparse.Namespace) -> None:
    from .plugins import describe

    print(json.dumps(describe(), indent=2))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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

    c = sub.add_parser("compress", parents=[common], help="images -> .selic files")
    c.add_argument("inputs", nargs="+", help="image files or glob patterns (quote them)")
    c.add_argument("-q", "--quality", type=float, default=DEFAULT_QUALITY,
                   help="1 (smallest) .. 8 (best), fractional ok")
    c.add_argument("-o", "--output-dir", type=Path, help="where to write (default: next to each input)")
    c.add_argument("--caption", help="describe the image yourself instead of running the captioner")
    c.add_argument("--no-caption", action="store_true", help="skip the semantic branch")
    c.add_argument("--store-caption", action="store_true", help="keep the caption text in the file")
    c.add_argument("--model", default="small", help="preset name of shipped weights, or a .safetensors path")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", parents=[common], help=".selic files -> PNG (or another format)")
    d.add_argument("inputs", nargs="+")
    d.add_argument("-o", "--output-dir", type=Path)
    d.add_argument("--format", default="png", help="output format understood by Pillow (png, tiff, webp, ...)")
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="print the header of .selic files as JSON lines")
    i.add_argument("inputs", nargs="+")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("demo", parents=[common], help="round-trip a real photo with the shipped model")
    m.add_argument("image", nargs="?", help="your photo (default: the astronaut photo shipped with selic)")
    m.add_argument("-q", "--quality", type=float, nargs="+", default=[2.0, 5.0])
    m.add_argument("--caption", default="")
    m.add_argument("--model", default="small")
    m.add_argument("--output", help="also write the last .selic file here")
    m.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train or resume a model (see `selic train --help`)", add_help=False)
    t.set_defaults(func=None)

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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from .train import main as train_main

        return train_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as exc:
        raise SystemExit(f"selic: {exc}") from None


if __name__ == "__main__":
    main()
