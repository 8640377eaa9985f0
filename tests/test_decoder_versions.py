"""Decoder versions: files name a released, frozen decoder; older releases' files keep opening; anything this
install cannot open is refused with the truth about why (development weights, a newer release, a newer config)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selic_engine as se
from selic_engine import cli, engine
from selic_engine.config import ModelConfig
from selic_engine.container import DecoderTag, pack, unpack
from selic_engine.errors import NewerSelicError, UnknownModelError
from selic_engine.model import Architecture, build_model, register_architecture
from selic_engine.model.registry import ARCHITECTURES
from selic_engine.model.selic import SelicModel
from selic_engine.testing import TINY, build_tiny
from selic_engine.weights import released_decoders
from selic_engine.weights.files import load_weights, model_id, save_weights

V1_STREAM = Path(__file__).parent / "conformance" / "v1" / "rgb-61x37-q8.selic"


@pytest.fixture
def dev_weights(tmp_path: Path, monkeypatch) -> Path:
    """Development weights that no release keeps, written to a file and not cached after the test."""
    path = tmp_path / "dev.safetensors"
    save_weights(build_tiny(seed=11), path)
    monkeypatch.setattr(engine, "_loaded", type(engine._loaded)())
    return path


def test_the_71000_step_release_is_decoder_v1():
    (v1,) = [r for r in released_decoders() if r.version == 1]
    assert v1.model_id == "206cfae08713c396" and v1.path.is_file()


def test_files_of_a_released_decoder_are_tagged_and_say_their_version(tmp_path: Path):
    data = V1_STREAM.read_bytes()
    assert unpack(data).decoder is None  # written before tags existed
    assert se.decode(data).info["decoder"] == "v1"  # known by its id
    fresh = se.encode(se.decode(data), 2, caption=False)
    assert unpack(fresh).decoder == DecoderTag(1, engine.RELEASE)
    assert unpack(fresh).decoder.writer == f"selic {se.__version__}"
    path = tmp_path / "x.selic"
    path.write_bytes(fresh)
    out = subprocess.run([sys.executable, "-m", "selic_engine", "info", str(path), str(V1_STREAM)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert [json.loads(line)["decoder"] for line in out] == ["v1", "v1"]


def test_a_file_from_development_weights_says_so_and_how_to_convert(dev_weights: Path, photo):
    data = se.encode(photo, 3, caption=False, model=dev_weights)
    assert unpack(data).decoder is None  # unreleased weights write no tag
    engine._loaded.clear()
    with pytest.raises(UnknownModelError) as info:
        se.decode(data)
    message = str(info.value)
    assert "development weights" in message and "selic convert FILE --from-weights" in message
    assert "upgrade" not in message.lower()


def test_a_file_from_a_newer_release_says_which_release_to_install(photo, tiny_engine):
    f = unpack(se.encode(photo, 3, caption=False, model=tiny_engine.model_id))
    f.header.model_id = "ab" * 8
    f.decoder = DecoderTag(99, (7, 0, 0))
    with pytest.raises(UnknownModelError, match=r"written by selic 7\.0\.0 with decoder v99.*install selic 7\.0\.0"):
        se.decode(pack(f))


def test_a_tagged_file_whose_id_disagrees_with_that_version_is_called_damaged(photo, tiny_engine):
    f = unpack(se.encode(photo, 3, caption=False, model=tiny_engine.model_id))
    f.header.model_id = "ab" * 8
    f.decoder = DecoderTag(1, (0, 1, 0))
    with pytest.raises(UnknownModelError, match="damaged") as info:
        se.decode(pack(f))
    assert "upgrade" not in str(info.value).lower()


def test_convert_re_encodes_development_files_for_this_release(dev_weights: Path, photo, tmp_path: Path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    image = Image.fromarray(photo)
    (old / "a.selic").write_bytes(se.encode(image, 5, "a striped card", model=dev_weights, store_caption=True,
                                            metadata={"exif": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"}))
    engine._loaded.clear()
    with pytest.raises(UnknownModelError):
        se.decode((old / "a.selic").read_bytes())
    cli.main(["convert", str(old / "a.selic"), "--from-weights", str(dev_weights), "-o", str(tmp_path / "new")])
    converted = (tmp_path / "new" / "a.selic").read_bytes()
    out = se.decode(converted)
    assert out.info["decoder"] == f"v{released_decoders()[-1].version}" and out.size == image.size
    assert out.info["caption"] == "a striped card" and out.info["exif"].startswith(b"Exif")
    assert se.probe(converted).quality == 5


def test_convert_refuses_weights_that_did_not_write_the_file(tiny_weights: Path, tmp_path: Path):
    src = tmp_path / "v1.selic"
    src.write_bytes(V1_STREAM.read_bytes())
    with pytest.raises(SystemExit, match="1 of 1 files failed"):
        cli.main(["convert", str(src), "--from-weights", str(tiny_weights), "-o", str(tmp_path / "out")])


def test_weights_with_a_config_field_from_a_newer_selic_are_refused_plainly():
    newer = json.loads(build_tiny().config.to_json()) | {"context_model": "checkerboard"}
    with pytest.raises(NewerSelicError, match="context_model.*newer selic"):
        ModelConfig.from_json(json.dumps(newer))


def test_weights_of_an_architecture_from_a_newer_selic_are_refused_plainly(tmp_path: Path):
    model = build_tiny()
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        state, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    meta["config"] = model.config.replace(architecture="selic-v9").to_json()
    save_file(state, str(path), metadata=meta)
    with pytest.raises(NewerSelicError, match="architecture 'selic-v9' is unknown"):
        load_weights(path)


def test_a_new_architecture_is_one_class_and_one_registry_entry(monkeypatch, photo):
    """A new decoder registers beside v1; its id covers its name and decoder config; v1 is untouched."""
    monkeypatch.setattr("selic_engine.model.registry.ARCHITECTURES", dict(ARCHITECTURES))

    @register_architecture("test-next")
    class Next(SelicModel):
        decoder_id = classmethod(Architecture.decoder_id.__func__)  # the general id: architecture + config

    config = ModelConfig(**{**TINY, "architecture": "test-next"})  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = build_model(config)
    assert type(model) is Next
    v1_twin = SelicModel(config.replace(architecture="selic-v1"))
    v1_twin.load_state_dict(model.state_dict())
    assert model_id(model.state_dict(), config) != model_id(v1_twin.state_dict(), v1_twin.config)
    assert model_id(model.state_dict(), config) == model_id(model.state_dict(), config.replace(text_dim=16))
    model.update(force=True)
    out = se.decode(se.encode(photo, 4, caption=False, model=se.register_model(model.eval()).model_id))
    assert np.asarray(out).shape == photo.shape


def test_weights_record_their_embedder_and_another_one_is_not_silent(tiny_weights: Path, photo, tmp_path: Path):
    """Installing another text embedder must not silently change what an encode means."""
    from selic_engine import plugins
    from selic_engine.engine import Engine

    from .test_plugins import HashEmbedder

    model, mid = load_weights(tiny_weights)
    trained_with = Engine(model, torch.device("cpu"), mid, embedder="hash384")
    with plugins.isolated():
        plugins.register(HashEmbedder(384, name="hash384"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            trained_with.encode(Image.fromarray(photo), 4, "a striped card")  # the embedder it was trained with
        plugins.register(HashEmbedder(384, name="other384"))
        with pytest.warns(UserWarning, match="trained with text vectors from hash384, but the active text embedder"):
            trained_with.encode(Image.fromarray(photo), 4, "a striped card")
