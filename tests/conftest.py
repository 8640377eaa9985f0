"""Shared fixtures: a tiny randomly initialised SELIC model registered with the engine; `selic train` / `selic
export` as tests call them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from selic_engine.config import TrainConfig

os.environ.setdefault("SELIC_CAPTIONER", "none")  # no BLIP download attempts in tests unless a test asks
os.environ.setdefault("SELIC_DEVICE", "cpu")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KODAK = SHARED / "kodak"


@pytest.fixture(scope="session")
def tiny_engine():
    """A registered tiny model: encode with model=tiny_engine.model_id; decode finds it by id."""
    from selic_engine import register_model
    from selic_engine.testing import build_tiny

    return register_model(build_tiny())


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, tiny_engine):
    """The tiny model written as a .safetensors weights file."""
    from selic_engine.testing import build_tiny
    from selic_engine.weights.files import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(build_tiny(), path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny training pool: 8 blurry photos of 90-140 px in two folders, their captions, and tiny.json (the
    tiny model as a preset variant)."""
    from PIL import Image

    from selic_engine.testing import TINY

    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    rows = ["path\tcaption"]
    for i in range(8):
        h, w = int(rng.integers(90, 140)), int(rng.integers(90, 140))
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        sub = "a" if i % 2 else "b"
        (root / sub).mkdir(exist_ok=True)
        img.save(root / sub / f"img{i}.png")
        rows.append(f"{sub}/img{i}.png\ta blurry test picture number {i}")
    (root / "captions.tsv").write_text("\n".join(rows) + "\n")
    (root / "tiny.json").write_text(json.dumps({"base": "small", **TINY}))
    return root


def train_config(*flags: str) -> TrainConfig:
    """The TrainConfig that `selic train FLAGS` runs."""
    from selic_engine import cli

    return cli.train_config(cli.parser().parse_args(["train", *flags]))


def export(checkpoint: Path, out: Path, *flags: str) -> str:
    """`selic export CHECKPOINT -o OUT [flags]`; returns the model id written."""
    from selic_engine import cli
    from selic_engine.weights.files import read_metadata

    cli.main(["export", str(checkpoint), "-o", str(out), *flags])
    return read_metadata(out)["model_id"]


def resumes_exactly(run: Callable[..., dict[str, Any]], groups: tuple[str, ...]) -> tuple[dict, dict]:
    """A training stage's run(out, steps, *flags) -> its last.pt: three steps straight into "a", and two plus one
    resumed into "b", must end with the same tensors in each of `groups`. Returns (b after two steps, resumed)."""
    import torch

    straight = run("a", 3)
    two = run("b", 2)
    resumed = run("b", 3, "--resume", "auto")
    assert straight["step"] == resumed["step"] == 3 and two["step"] == 2
    for group in groups:
        for name, tensor in straight[group].items():
            assert torch.equal(tensor, resumed[group][name]), (group, name)
    return two, resumed


@pytest.fixture
def photo() -> np.ndarray:
    """A smooth synthetic 'photo' with edges, odd size on purpose (not a multiple of 64)."""
    h, w = 77, 101
    yy, xx = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(xx / 9.0)
    g = 128 + 100 * np.cos(yy / 7.0)
    b = np.where((xx - 50) ** 2 + (yy - 38) ** 2 < 400, 230, 40)
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def kodak_or_skip() -> Path:
    if not KODAK.is_dir():
        pytest.skip(f"Kodak images not found at {KODAK} (../shared/data is only on development machines)")
    return KODAK
