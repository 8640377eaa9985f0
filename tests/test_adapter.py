"""`selic train --adapter`: an encoder for a new text embedder, whose files decode with the stock weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selic_engine as se
from selic_engine import plugins
from selic_engine.container import unpack
from selic_engine.engine import Engine
from selic_engine.training.loop import train
from selic_engine.weights.files import load_weights, model_id, read_metadata, save_weights

from .conftest import export, train_config
from .test_plugins import HashEmbedder

NEW_DIM = 24  # the plugin embedder's D; the tiny model was trained for 384


def make_dataset(root: Path, count: int = 4, size: int = 96) -> Path:
    """A few smooth generated photos and their captions.tsv (with its header line)."""
    root.mkdir()
    yy, xx = np.mgrid[0:size, 0:size]
    lines = ["path\tcaption"]
    for i in range(count):
        rgb = np.stack([128 + 100 * np.sin(xx / (5 + i)), 128 + 100 * np.cos(yy / (4 + i)),
                        np.where((xx - 40) ** 2 + (yy - 50) ** 2 < 300 + 100 * i, 220, 30)], -1)
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(root / f"img{i}.png")
        lines.append(f"img{i}.png\tpicture {i}: stripes and a disc")
    (root / "captions.tsv").write_text("\n".join(lines) + "\n")
    return root


BASE_STEP, BASE_SECONDS = 71_000, 84_513  # the training history the adapted weights record


@pytest.fixture(scope="module")
def adapter_weights(tmp_path_factory, tiny_weights) -> Path:
    """Three adapter steps on the tiny model for a 24-d plugin embedder, exported as weights."""
    tmp_path = tmp_path_factory.mktemp("adapter")
    data = make_dataset(tmp_path / "data")
    base = tmp_path / "base.safetensors"
    save_weights(load_weights(tiny_weights)[0], base,
                 {"step": str(BASE_STEP), "train_seconds": str(BASE_SECONDS)})
    cfg = train_config(
        "--data", str(data), "--out", str(tmp_path / "run"), "--init-weights", str(base),
        "--adapter", "--embedder", "hook", "--steps", "3", "--batch-size", "2", "--crop", "64", "--min-crop", "64",
        "--workers", "0", "--val-every", "0", "--val-images", "0", "--lr", "1e-3",
    )
    with pytest.MonkeyPatch.context() as mp, plugins.isolated():
        mp.setenv("SELIC_CACHE", str(tmp_path / "cache"))
        plugins.register(HashEmbedder(NEW_DIM))
        last = train(cfg)
    assert list((tmp_path / "cache").glob(f"captions-hash{NEW_DIM}-*.npy"))  # cached under the plugin's name
    out = tmp_path / "adapter.safetensors"
    export(last, out)
    return out


def test_adapter_changes_only_the_encoder(adapter_weights, tiny_weights, tiny_engine):
    adapted, mid = load_weights(adapter_weights)
    stock, stock_mid = load_weights(tiny_weights)
    assert mid == stock_mid == tiny_engine.model_id  # the decoder, hence the model id, is untouched
    assert adapted.config == stock.config.replace(text_dim=NEW_DIM)
    assert adapted.fusion.project[0].in_features == NEW_DIM
    a, s = adapted.state_dict(), stock.state_dict()
    changed = {k.split(".", 1)[0] for k in s if a[k].shape != s[k].shape or not torch.equal(a[k], s[k])}
    assert changed and changed <= set(adapted.ENCODER_MODULES)
    assert model_id(a, adapted.config) == model_id(s, stock.config)


def test_adapter_export_counts_on_from_the_adapted_weights_history(adapter_weights):
    """The adapter run counts its own steps from 0; its export used to record only those (3 here) as the
    weights' whole training, so training on from it restarted the step count."""
    meta = read_metadata(adapter_weights)
    assert meta["adapter_step"] == "3"
    assert meta["step"] == str(BASE_STEP + 3)
    assert BASE_SECONDS <= float(meta["train_seconds"]) < BASE_SECONDS + 600


def test_adapter_files_decode_with_the_stock_weights(adapter_weights, tiny_weights, tiny_engine, photo):
    adapted, mid = load_weights(adapter_weights)
    stock, _ = load_weights(tiny_weights)
    cpu = torch.device("cpu")
    with plugins.isolated():
        plugins.register(HashEmbedder(NEW_DIM))
        image = Image.fromarray(photo)
        blob = Engine(adapted, cpu, mid).encode(image, 4, "stripes and a disc")
        with pytest.raises(ValueError, match=f"gives {NEW_DIM}-d vectors but the model expects 384-d"):
            tiny_engine.encode(image, 4, "stripes and a disc")  # the stock encoder cannot use this embedder
    assert se.probe(blob).model_id == tiny_engine.model_id
    out = Engine(stock, cpu, mid).decode_file(unpack(blob))  # raises DesyncError if the decoder disagreed
    assert out.size == (photo.shape[1], photo.shape[0])
    assert np.array_equal(np.asarray(out), np.asarray(se.decode(blob)))


def test_adapter_needs_a_model_to_adapt(tmp_path, monkeypatch):
    monkeypatch.setenv("SELIC_CACHE", str(tmp_path / "cache"))
    data = make_dataset(tmp_path / "data", count=1)
    cfg = train_config("--data", str(data), "--out", str(tmp_path / "run"), "--adapter", "--embedder", "hook",
                       "--preset", "paper", "--workers", "0")
    with plugins.isolated(), pytest.raises(ValueError, match="--init-weights"):
        plugins.register(HashEmbedder(NEW_DIM))
        train(cfg)
