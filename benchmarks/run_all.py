"""Regenerate every benchmark and the README sections built from their JSON results.

    python -m benchmarks.run_all [--model small|PATH] [--quick] [--images N]
                                 [--train-ablation --steps N] [--readme-only]

Each benchmark runs in its own process (its own thread settings and memory); one that fails
(e.g. no selic weights yet) is reported and the others still run. The README sections come
from results/*.json only, so `--readme-only` rebuilds them without measuring anything.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from pathlib import Path

from .common import BENCH_DIR, REPO, RESULTS, read_json

README = BENCH_DIR / "README.md"

#: section (= module in benchmarks/ with a markdown(results) function) -> figures shown under it
SECTIONS: dict[str, tuple[str, ...]] = {
    "rd_kodak": ("rd_psnr.png", "rd_msssim.png", "crops_025bpp.png"),
    "ceiling": (),
    "speed": (),
    "large_images": (),
    "band_cost": (),
    "fuzz_long": (),
    "semantic_cost": (),
    "ablation": (),
}


def section(name: str, results_dir: Path = RESULTS) -> str:
    """The generated Markdown of one section (from results/<name>.json), or a note saying how to produce it."""
    path = results_dir / f"{name}.json"
    if not path.exists():
        return f"_Not generated yet: run `python -m benchmarks.{name}` (or `python -m benchmarks.run_all`)._\n"
    body = importlib.import_module(f"benchmarks.{name}").markdown(read_json(path))
    body = re.sub(r"\A# .*\n+", "", body)  # the section heading is the README's own
    if re.search(r"^## ", body, re.M):  # keep its subsections below the README's "##"
        body = re.sub(r"^(#{2,}) ", r"#\1 ", body, flags=re.M)
    shown = [f"![{f}](results/{f})" for f in SECTIONS[name] if (results_dir / f).exists()]
    return body + ("\n" + "\n\n".join(shown) + "\n" if shown else "")


def update_readme(readme: Path = README, results_dir: Path = RESULTS) -> None:
    """Replace the text between <!-- BEGIN name --> and <!-- END name --> with freshly built sections."""
    text = readme.read_text(encoding="utf-8")
    for name in SECTIONS:
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"{readme} has no <!-- BEGIN {name} --> ... <!-- END {name} --> markers")
        body = section(name, results_dir)
        text = pattern.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)
    readme.write_text(text, encoding="utf-8")


def run_step(module: str, args: list[str]) -> bool:
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *args]
    print("run_all:", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    ok = subprocess.run(cmd, cwd=REPO, check=False).returncode == 0
    if not ok:
        print(f"run_all: {module} failed; continuing", file=sys.stderr)
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", help="selic preset name or a .safetensors path")
    p.add_argument("--images", type=int, default=0, help="first N Kodak images (default all 24)")
    p.add_argument("--quick", action="store_true", help="fewer settings, images and repeats")
    p.add_argument("--skip", default="", help=f"comma-separated steps to skip: {','.join(SECTIONS)}")
    p.add_argument("--train-ablation", action="store_true", help="also train the fusion variants (hours of CPU)")
    p.add_argument("--steps", type=int, default=5000, help="training steps per ablation variant")
    p.add_argument("--readme-only", action="store_true", help="only rebuild README.md from results/*.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.readme_only:
        skip = set(args.skip.split(","))
        images = args.images or (4 if args.quick else 0)  # the same set everywhere, so ablation reuses rd points
        common = ["--model", args.model] + (["--images", str(images)] if images else [])
        if "rd_kodak" not in skip:
            run_step("rd_kodak", common + (["--quick"] if args.quick else []))
        if "ceiling" not in skip:
            run_step("ceiling", ["--models", args.model] + (["--images", "2"] if args.quick else []))
        if "speed" not in skip:
            run_step("speed", common + (["--repeats", "1"] if args.quick else []))
        if "semantic_cost" not in skip:
            run_step("semantic_cost", ["--repeats", "1"] if args.quick else [])
        if "ablation" not in skip:
            train = ["--train", "--steps", str(args.steps)] if args.train_ablation else []
            run_step("ablation", common + train + ["--probe"])
    update_readme()
    print(f"run_all: updated {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
