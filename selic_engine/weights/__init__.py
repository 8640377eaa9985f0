"""The codec's weights: where the shipped files live, the manifest that vouches for them, and the module groups.

This package owns everything about weights: the shipped `.safetensors` files, their `manifest.json` and the
model card (README.md) sit in this folder; `weights.files` loads, saves and exports them. This module needs
no torch, so checking a file against the manifest costs nothing but reading it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import WeightsNotFoundError

WEIGHTS_DIR = Path(__file__).resolve().parent
#: Beside every exported weights file: {file name: {"sha256": ..., "model_id": ...}}.
MANIFEST = "manifest.json"

# Module groups of SelicModel (its top-level children; tests check that the two cover it).
#: Run by the encoder alone: all that an adapter for a new text embedder retrains (h_a feeds z, whose
#: entropy tables stay frozen).
ENCODER_MODULES = ("g_a", "fusion", "h_a")
#: What the decoder needs, and all it needs: the model id hashes these, so a file names the decoder it requires.
DECODER_MODULES = ("h_s", "entropy_bottleneck", "charm", "g_s", "gains")


def shipped_weights_path(preset: str) -> Path:
    """Where the weights shipped for a preset name live (whether or not they are installed)."""
    return WEIGHTS_DIR / f"selic-{preset}.safetensors"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks: how every weights file (codec, captioner) is verified."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, dict[str, str]]:
    """The manifest of the weights in `folder` (empty when there is none)."""
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


def record_in_manifest(weights: Path, mid: str) -> None:
    """Record a weights file's sha256 and model id in the manifest beside it: the engine refuses shipped files
    that differ."""
    entries = read_manifest(weights.parent)
    entries[weights.name] = {"sha256": sha256_file(weights), "model_id": mid}
    (weights.parent / MANIFEST).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


def resolve_weights(model: str | os.PathLike) -> Path:
    """A preset name ("small") -> the shipped file, checked against its recorded sha256; a path -> itself."""
    path = Path(model)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file {path} does not exist")
        return path
    path = shipped_weights_path(str(model))
    record = read_manifest(path.parent).get(path.name)
    if not path.is_file() or record is None:
        raise WeightsNotFoundError(
            f"the shipped weights for model {model!r} are not installed ({path}); train them with "
            "`selic train` and `selic export`, or pass model=PATH.safetensors"
        )
    if sha256_file(path) != record["sha256"]:
        raise WeightsNotFoundError(f"{path} does not match its recorded sha256: reinstall selic")
    return path
