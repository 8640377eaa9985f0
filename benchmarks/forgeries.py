"""What a hostile file costs before it is refused: issue 32's wide forgeries, per model.

    python -m benchmarks.forgeries [--models small /path/v2.safetensors] [--threads 1]

Each case is a file claiming WIDTH x HEIGHT whose z stream is valid for that size (a photo-like strip's z repeated
across the width, benchmarks.fuzzing.forged_wide) and whose y stream is BYTES of garbage: the cheapest file that
makes a decoder start on a huge latent. It is decoded in a fresh process, timed from the decode call to its error,
with the peak resident memory it added; a case that decodes (it should not) says so. The bound a decoder can keep:
work and memory that follow the file's bytes, not the size it claims. Writes benchmarks/results/forgeries.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from .common import REPO, machine, machine_line, md_table, publish, set_threads

#: (width, height, garbage y bytes): issue 32's cases, from one row to just under Pillow's pixel limit.
CASES = ((1 << 18, 1, 64), (1 << 20, 1, 64), (1 << 20, 1, 4096), (1 << 20, 85, 64), (1 << 20, 85, 65536))

CASE = """
import json, sys, time
import selic_engine as se
from benchmarks.common import peak_rss_mib, set_threads
from benchmarks.fuzzing import forged_wide
set_threads({threads})
data = forged_wide(se.get_engine({model!r}), {width}, {height}, {y_bytes}, texture=True)
before, start = peak_rss_mib(), time.perf_counter()
try:
    se.decode(data)
    result = "decoded"
except ValueError as exc:  # every typed refusal (selic_engine.errors)
    result = type(exc).__name__
print(json.dumps({{"seconds": time.perf_counter() - start, "grown_mib": peak_rss_mib() - before, "result": result}}))
"""


def measure(model: str, width: int, height: int, y_bytes: int, threads: int) -> dict[str, Any]:
    """One case in a fresh process (its peak memory is its own)."""
    code = CASE.format(model=model, width=width, height=height, y_bytes=y_bytes, threads=threads)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    row = {"model": model, "width": width, "height": height, "y_bytes": y_bytes}
    if proc.returncode:
        return {**row, "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return {**row, **json.loads(proc.stdout.strip().splitlines()[-1])}


def markdown(res: dict[str, Any]) -> str:
    rows = [[r["model"], f"{r['width']}x{r['height']}", r["y_bytes"], r.get("result", r.get("error")),
             r.get("seconds"), r.get("grown_mib")] for r in res["cases"]]
    return "\n".join([
        "What a forged file costs before it is refused: a valid z stream for the claimed size and garbage y bytes "
        f"(benchmarks.fuzzing.forged_wide), decoded in a fresh process at {res['threads']} thread(s).", "",
        md_table(["model", "claimed size", "y bytes", "result", "seconds to refusal", "memory added (MiB)"], rows,
                 digits=2), "", f"Machine: {machine_line(res['machine'])}", ""])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["small"], help="preset names or .safetensors paths")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    cases = [measure(m, *case, args.threads) for m in args.models for case in CASES]
    publish("forgeries", {"threads": args.threads, "cases": cases, "machine": machine()}, markdown)


if __name__ == "__main__":
    main()
