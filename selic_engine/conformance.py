"""Conformance streams: small .selic files written by each released decoder, with the sha256 of their decoded
symbols and of their pixels, so that a change to a released decoder's output cannot land unnoticed.

`tests/conformance/v<N>/streams.json` lists a decoder's streams. `check` decodes each and compares: the symbols
everywhere (they are exact on every machine: the probability side runs in float64 on the CPU), the pixels per
machine kind and precision (g_s's float arithmetic differs between CPU kinds, never between thread counts).
`python -m selic_engine.conformance record tests/conformance/v1` adds this machine kind's pixel hashes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

STREAMS = "streams.json"


def precisions() -> list[str]:
    """The transform precisions this machine runs natively (the paths whose pixels can be pinned here)."""
    import torch

    from .engine import select_device
    from .precision import resolve

    return ["float32"] + (["bfloat16"] if resolve("auto", select_device()) == torch.bfloat16 else [])


def symbols_sha256(data: bytes) -> str:
    """sha256 of a file's decoded int32 y symbols, band by band, each band in C order (the bytes the file's own
    symbol hash covers)."""
    from .container import unpack
    from .engine import engine_for_id

    f = unpack(data)
    engine = engine_for_id(f.header.model_id, "cpu", f.decoder)
    model = engine.model
    size = (f.header.height, f.header.width)
    digest = hashlib.sha256()
    model.latent_codec.decompress(f.z_stream, f.y_stream, model.geometry.z_shape(size),
                                  model.geometry.coding_band_rows, digest=digest)
    return digest.hexdigest()


def pixels_sha256(data: bytes, precision: str) -> str:
    """sha256 of the decoded image's bytes (Image.tobytes, in the file's mode) on the CPU at `precision`."""
    from . import decode

    return hashlib.sha256(decode(data, device="cpu", precision=precision).tobytes()).hexdigest()  # type: ignore[arg-type]


def load(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STREAMS).read_text())


def check(folder: Path, stream: dict[str, Any]) -> list[str]:
    """What differs for one stream of `folder` on this machine (empty: conformant)."""
    from .precision import machine_kind

    data = (folder / stream["file"]).read_bytes()
    problems = []
    if symbols_sha256(data) != stream["symbols_sha256"]:
        problems.append(f"{stream['file']}: decoded symbols differ")
    pinned = stream["pixels_sha256"].get(machine_kind(), {})
    for precision in precisions():
        if precision in pinned and pixels_sha256(data, precision) != pinned[precision]:
            problems.append(f"{stream['file']}: {precision} pixels differ on {machine_kind()}")
    return problems


def record(folder: Path) -> None:
    """Pin this machine kind's pixels for every stream of `folder` (only after its symbols check out)."""
    from .precision import machine_kind

    spec = load(folder)
    for stream in spec["streams"]:
        data = (folder / stream["file"]).read_bytes()
        if symbols_sha256(data) != stream["symbols_sha256"]:
            raise SystemExit(f"{stream['file']}: decoded symbols differ: this build does not conform; not recording")
        stream["pixels_sha256"][machine_kind()] = {p: pixels_sha256(data, p) for p in precisions()}
    (folder / STREAMS).write_text(json.dumps(spec, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "record":
        raise SystemExit("usage: python -m selic_engine.conformance record tests/conformance/vN")
    record(Path(sys.argv[2]))
