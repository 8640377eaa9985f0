"""The shipped codec weights (safetensors) and their model card live in this folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def shipped_weights_path(preset: str) -> Path:
    return WEIGHTS_DIR / f"selic-{preset}.safetensors"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks: how every weights file (codec, captioner) is verified."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
