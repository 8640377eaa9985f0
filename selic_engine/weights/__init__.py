"""The codec's weights: where the shipped files live, the manifest that vouches for them, and the released
decoders it lists.

This package owns everything about weights: the shipped `.safetensors` files, their `manifest.json` and the
model card (README.md) sit in this folder; `weights.files` loads, saves and exports them. This module needs
no torch, so checking a file against the manifest, or finding which file a .selic file's decoder is in, costs
nothing but reading it.

Every released decoder stays in the package for ever: its manifest entry gives its version ("decoder": 1),
the release that first shipped it, and the file that holds it, so that every .selic file any release wrote
opens in every later one (docs/format.md, "Compatibility").
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsNotFoundError

WEIGHTS_DIR = Path(__file__).resolve().parent
#: Beside every exported weights file: {file name: {"sha256": ..., "model_id": ...}}; a released decoder's entry
#: adds "decoder" (its version) and "release" (the selic release that first shipped it).
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DecoderRelease:
    """A released, frozen decoder: files that name its id (or its version) open with `path`."""

    version: int
    model_id: str
    release: str  # the selic release that first shipped it
    path: Path


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
    kept = entries.get(weights.name, {})
    # A re-export of a released decoder (a better encoder beside it: the same decoder id) stays that release.
    release = {k: kept[k] for k in ("decoder", "release") if k in kept and kept.get("model_id") == mid}
    entries[weights.name] = {"sha256": sha256_file(weights), "model_id": mid, **release}
    (weights.parent / MANIFEST).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")


def released_decoders(folder: Path | None = None) -> list[DecoderRelease]:
    """Every released decoder in `folder` (default: the package's), oldest first."""
    folder = folder or WEIGHTS_DIR
    found = [DecoderRelease(int(e["decoder"]), e["model_id"], e["release"], folder / name)
             for name, e in read_manifest(folder).items() if "decoder" in e]
    return sorted(found, key=lambda r: r.version)


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
