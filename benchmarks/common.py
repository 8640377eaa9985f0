"""Shared paths, Kodak loading, machine description, peak memory and small JSON/Markdown helpers."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SHARED = REPO.parent / "shared"
KODAK = SHARED / "data" / "kodak"
TRAIN_DATA = SHARED / "data" / "train"
REFERENCE = SHARED / "reference" / "compressai-kodak"
RESULTS = BENCH_DIR / "results"


def kodak_paths(limit: int | None = None) -> list[Path]:
    """kodim01..24.png in order (the first `limit` of them); a clear error when the data is absent."""
    paths = sorted(KODAK.glob("kodim*.png"))
    if not paths:
        raise SystemExit(f"Kodak images not found at {KODAK} (../shared/data is only on development machines)")
    return paths[:limit] if limit else paths


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def kodak_captions() -> dict[str, str]:
    """{file name: caption} from kodak/captions.tsv (hand-written, BLIP-style)."""
    rows = (KODAK / "captions.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return dict(row.split("\t", 1) for row in rows if "\t" in row)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (0 keeps torch's default): measurements on a shared CPU need a fixed count."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def peak_rss_mib(maxrss: int | None = None) -> float:
    """Peak resident set size of this process so far, or the one getrusage reported as `maxrss`, in MiB
    (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if maxrss is None else maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, load, library versions, GPU if any."""
    import numpy
    import PIL
    import torch

    from selic_engine.precision import machine_kind

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cuda_available": torch.cuda.is_available(),
        "kind": machine_kind(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def machine_line(m: dict[str, Any]) -> str:
    """One Markdown line describing the machine of a results file."""
    parts = [f"{m.get('cpu')} ({m.get('physical_cores', '?')} cores / {m.get('logical_cpus')} threads, "
             f"{m.get('kind', 'kind not recorded')})",
             f"{m.get('memory_gib', '?')} GiB", f"torch {m.get('torch')} ({m.get('torch_threads')} threads)",
             f"Pillow {m.get('pillow')}", f"load average {m.get('load_average_1_5_15')}"]
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']} (CUDA {m.get('cuda')})")
    parts += [m.get("platform"), m.get("date_utc"), f"commit {m.get('git_commit')}"]
    return "; ".join(str(p) for p in parts)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def write_json(path: Path, data: Any) -> None:
    """Strict JSON (NaN and infinities become null: undefined values), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(_finite(data), indent=1, allow_nan=False, default=_jsonable)
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)


def publish(name: str, res: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> None:
    """results/<name>.json and results/<name>.md, and the markdown on stdout: how a benchmark reports."""
    write_json(RESULTS / f"{name}.json", res)
    text = markdown(res)
    (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")
    print(text)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for tables: NaN/None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)

