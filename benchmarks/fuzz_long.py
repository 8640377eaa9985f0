"""Long fuzzing run of the .selic decoder (the CI test runs a few thousand fixed cases; this runs for minutes or hours).

    python -m benchmarks.fuzz_long [--minutes 30] [--seed 0] [--decoders all|engine] [--atheris]

Cases are stacked random mutations of tiny valid files (the mutators of benchmarks/fuzzing.py: random
bytes, truncation, bit flips, chunk-length and header edits, forged streams, byte overwrites and
cuts), half of them CRC-resealed so they reach the rANS decoder. Each runs through
selic_engine.decode and, when pillow_selic is installed, Image.open().load() and imageio.v3.imread.
The run passes when every case ends in SyntaxError / OSError / ValueError (or Pillow's
DecompressionBombError on the Pillow paths) within the per-case time limit.

The fuzzing happens in a worker process that writes each case to disk before decoding it: a case
that kills the worker (a crash in native code) is kept as a reproducer under
benchmarks/results/fuzz_long_cases/, and a new worker continues with the next seed. Cases that
raise anything else are kept there too. Results: benchmarks/results/fuzz_long.json and .md.
`--atheris` drives the same harness with atheris (coverage-guided; `pip install atheris`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from .common import REPO, RESULTS, machine, machine_line, md_table, peak_rss_mib, write_json

CASES_DIR = RESULTS / "fuzz_long_cases"


def _samples() -> dict[str, bytes]:
    """Tiny valid files from the tests' tiny random model."""
    from selic_engine import register_model
    from selic_engine.testing import build_tiny

    from . import fuzzing

    return fuzzing.samples(register_model(build_tiny()).model_id)


def _case(rng: random.Random, samples: dict[str, bytes]) -> tuple[str, bytes]:
    """One hostile input: a mutator of benchmarks/fuzzing.py picked at random, sometimes stacked with overwrites."""
    from . import fuzzing

    keys = sorted(samples)
    data = samples[rng.choice(keys)]
    other = samples[rng.choice(keys)]
    pick = rng.randrange(8)
    if pick == 0:
        return rng.choice(list(fuzzing.random_bytes(rng, 3)))
    if pick == 1:
        return "truncated", data[: rng.randrange(len(data))]
    if pick == 2:
        return rng.choice(list(fuzzing.bit_flips(rng, data, 4)))
    if pick == 3:
        return rng.choice(list(fuzzing.length_edits(data)))
    if pick == 4:
        return rng.choice(list(fuzzing.header_edits(data)))
    if pick == 5:
        return rng.choice(list(fuzzing.forged_streams(rng, data, other)))
    edits = [(rng.random(), rng.randrange(256)) for _ in range(rng.randrange(1, 12))]
    cut = (rng.random(), rng.random()) if rng.random() < 0.3 else None
    if pick == 6:  # splice: the head of one file onto the tail of another
        data = data[: rng.randrange(len(data))] + other[rng.randrange(len(other)):]
    return "mutation", fuzzing.mutate(data, edits, cut, seal=rng.random() < 0.5)


def _fuzzer(which: str):
    from PIL import Image

    from . import fuzzing

    Image.MAX_IMAGE_PIXELS = fuzzing.MAX_PIXELS  # claims above twice this fail before decoding: bounded time per case
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    decoders = fuzzing.decoders()
    if which == "engine":
        decoders = {"selic_engine.decode": decoders["selic_engine.decode"]}
    return fuzzing.Fuzzer(decoders)


def worker(seed: int, seconds: float, which: str, last_case: Path) -> None:
    """Fuzz until the time is up; print one JSON line of results (failures are saved, not raised)."""
    rng = random.Random(seed)
    samples = _samples()
    fuzzer = _fuzzer(which)
    failures: list[dict[str, Any]] = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        label, data = _case(rng, samples)
        last_case.write_bytes(data)
        try:
            fuzzer.run(label, data)
        except AssertionError as exc:
            CASES_DIR.mkdir(parents=True, exist_ok=True)
            path = CASES_DIR / f"failure_seed{seed}_{len(failures)}.selic"
            path.write_bytes(data)
            failures.append({"label": label, "error": str(exc)[:300], "case": str(path.relative_to(REPO))})
    print(json.dumps({"seed": seed, "seconds": time.monotonic() - start, "cases": fuzzer.cases,
                      "outcomes": dict(fuzzer.outcomes), "slowest_s": fuzzer.slowest, "failures": failures,
                      "peak_rss_mib": peak_rss_mib()}))


def run(minutes: float, seed: int, which: str) -> dict[str, Any]:
    """Workers in turn until the time is up; a worker killed by a signal leaves its last case as a reproducer."""
    deadline = time.monotonic() + 60 * minutes
    total: Counter[str] = Counter()
    out: dict[str, Any] = {"minutes": minutes, "first_seed": seed, "decoders": which, "cases": 0, "workers": [],
                           "failures": [], "crashes": [], "slowest_s": 0.0, "peak_rss_mib": 0.0}
    last_case = RESULTS / ".fuzz_long_last_case"
    last_case.parent.mkdir(parents=True, exist_ok=True)
    while (left := deadline - time.monotonic()) > 5:
        cmd = [sys.executable, "-m", "benchmarks.fuzz_long", "--worker", str(seed), str(left), which, str(last_case)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        if proc.returncode > 0:  # the worker itself failed (an import, a sample encode): not a finding
            raise SystemExit(f"fuzz worker failed: {proc.stderr.strip()[-2000:]}")
        if proc.returncode < 0:  # killed by a signal while decoding its last case
            CASES_DIR.mkdir(parents=True, exist_ok=True)
            path = CASES_DIR / f"crash_seed{seed}.selic"
            if last_case.exists():
                last_case.replace(path)
            tail = proc.stderr.strip().splitlines()[-3:]
            out["crashes"].append({"seed": seed, "returncode": proc.returncode, "stderr": tail,
                                   "case": str(path.relative_to(REPO))})
        else:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            out["workers"].append({k: result[k] for k in ("seed", "seconds", "cases")})
            out["cases"] += result["cases"]
            total.update(result["outcomes"])
            out["failures"] += result["failures"]
            out["slowest_s"] = max(out["slowest_s"], result["slowest_s"])
            out["peak_rss_mib"] = max(out["peak_rss_mib"], result["peak_rss_mib"])
        seed += 1
    last_case.unlink(missing_ok=True)
    out["outcomes"] = dict(total.most_common())
    out["passed"] = not out["failures"] and not out["crashes"]
    return out


def atheris_main(which: str) -> None:
    """Coverage-guided fuzzing with atheris over the same decoders (runs until interrupted or -runs=N)."""
    try:
        import atheris
    except ImportError:
        raise SystemExit("atheris is not installed: pip install atheris") from None
    with atheris.instrument_imports():
        import selic_engine.container.format  # noqa: F401
        import selic_engine.engine  # noqa: F401
    samples = _samples()
    fuzzer = _fuzzer(which)
    corpus = REPO / "benchmarks" / "results" / "fuzz_long_cases" / "atheris_corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in samples.items():
        (corpus / name).write_bytes(data)
    atheris.Setup([sys.argv[0], str(corpus), *os.environ.get("ATHERIS_ARGS", "").split()],
                  lambda data: fuzzer.run("atheris", data))
    atheris.Fuzz()


def markdown(r: dict[str, Any]) -> str:
    status = "passed" if r["passed"] else "FAILED"
    rows = [[k, v] for k, v in r["outcomes"].items()]
    lines = [f"Long fuzz run ({status}): {r['cases']} decoder calls in {r['minutes']:g} min "
             f"({r['decoders']} decoders), seeds from {r['first_seed']}; slowest case {r['slowest_s']:.2f} s, "
             f"peak RSS {r['peak_rss_mib']:.0f} MiB; {len(r['failures'])} failures, {len(r['crashes'])} crashes.",
             "", md_table(["outcome", "count"], rows), "", f"Machine: {machine_line(r['machine'])}"]
    for item in r["failures"] + r["crashes"]:
        lines.append(f"- {item}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        seed, seconds, which, last_case = argv[1:5]
        return worker(int(seed), float(seconds), which, Path(last_case))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoders", choices=["all", "engine"], default="all")
    p.add_argument("--atheris", action="store_true", help="coverage-guided with atheris (ATHERIS_ARGS: its flags)")
    args = p.parse_args(argv)
    os.environ.setdefault("SELIC_CAPTIONER", "none")
    os.environ.setdefault("SELIC_DEVICE", "cpu")
    if args.atheris:
        return atheris_main(args.decoders)
    result = {**run(args.minutes, args.seed, args.decoders), "machine": machine()}
    write_json(RESULTS / "fuzz_long.json", result)
    (RESULTS / "fuzz_long.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
