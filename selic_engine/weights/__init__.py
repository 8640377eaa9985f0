"""The shipped codec weights (safetensors) and their model card live in this folder."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent


def shipped_weights_path(preset: str) -> Path:
    return WEIGHTS_DIR / f"selic-{preset}.safetensors"
