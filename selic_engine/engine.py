"""The cached inference engine: one loaded model per (weights, device), shared by every thread.

Decoding needs only the bitstream and the decoder weights named by the file's model id;
the semantic models are imported and loaded on the encode path only.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import imaging
from .config import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN
from .container import Header, SelicFile, pack, quantize_quality, read_header, unpack
from .errors import DesyncError, UnknownModelError, WeightsNotFoundError
from .model import SelicModel
from .model.determinism import native_conv
from .model.io import load_weights, model_id, read_metadata
from .weights import WEIGHTS_DIR, shipped_weights_path

DEFAULT_MODEL = "small"
MANIFEST = WEIGHTS_DIR / "manifest.json"  # {file name: {"sha256": ..., "model_id": ...}}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Explicit argument, else $SELIC_DEVICE, else CUDA when present, else CPU."""
    choice = device or os.environ.get("SELIC_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available")
    return dev


def symbol_hash(symbols: torch.Tensor) -> bytes:
    return hashlib.blake2b(symbols.to(torch.int32).contiguous().numpy().tobytes(), digest_size=8).digest()


def check_quality(quality: float) -> float:
    q = float(quality)
    if not QUALITY_MIN <= q <= QUALITY_MAX:  # also rejects NaN
        raise ValueError(f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g} (fractional allowed), got {quality!r}")
    return quantize_quality(q)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest() -> dict[str, dict[str, str]]:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def resolve_weights(model: str | os.PathLike) -> Path:
    """A preset name ("small") -> the shipped file, checked against its recorded sha256; a path -> itself."""
    path = Path(model)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file {path} does not exist")
        return path
    path = shipped_weights_path(str(model))
    record = _manifest().get(path.name)
    if not path.is_file() or record is None:
        raise WeightsNotFoundError(
            f"the shipped weights for model {model!r} are not installed ({path}); train them with "
            "`selic train` and `selic export`, or pass model=PATH.safetensors"
        )
    if _sha256(path) != record["sha256"]:
        raise WeightsNotFoundError(f"{path} does not match its recorded sha256: reinstall selic")
    return path


class Engine:
    """A model in coding layout on one device. Thread-safe: inference holds no mutable state."""

    def __init__(self, model: SelicModel, device: torch.device, mid: str) -> None:
        self.model = model.coding_layout(device)
        self.device = device
        self.model_id = mid
        self.config = model.config

    def encode(
        self,
        image: Image.Image | np.ndarray,
        quality: float = DEFAULT_QUALITY,
        caption: str | bool | None = None,
        *,
        store_caption: bool = False,
        metadata: dict[str, bytes] | None = None,
    ) -> bytes:
        """Encode to .selic bytes. caption: text, None (find one), or False (skip the semantic branch)."""
        q = check_quality(quality)
        image = imaging.normalize_mode(imaging.as_pil(image))
        x, alpha = imaging.split(image)
        text, embedding = None, None
        if caption is not False and self.config.fusion != "none":
            from . import semantic

            text = semantic.resolve_caption(image, caption if isinstance(caption, str) else None)
            if text:
                embedding = torch.from_numpy(semantic.embed_texts([text], self.config.text_dim))
        coded = self.model.compress(x.to(self.device), q, embedding)
        meta = {k: bytes(v) for k, v in (metadata or {}).items() if v}
        if store_caption and text:
            meta["caption"] = text.encode("utf-8")
        header = Header(self.model_id, image.width, image.height, image.mode, q, symbol_hash(coded.symbols))
        return pack(SelicFile(header, coded.z_stream, coded.y_stream, alpha, meta))

    def decode_file(self, f: SelicFile) -> Image.Image:
        h = f.header
        z_shape = (-(-h.height // 64), -(-h.width // 64))
        try:
            with native_conv():
                x_hat, symbols = self.model.decompress(f.z_stream, f.y_stream, z_shape, h.quality, (h.height, h.width))
        except (RuntimeError, ValueError) as exc:  # rANS decoding of a damaged stream
            raise DesyncError(f"latent stream could not be decoded: {exc}") from exc
        if symbol_hash(symbols) != h.symbol_hash:
            raise DesyncError("decoded latent symbols do not match the file's hash: the file is damaged, or this "
                              "machine's decoder disagrees with the encoder's")
        return imaging.merge(x_hat, h.mode, f.alpha)


_engines: dict[tuple[str, str], Engine] = {}
_paths_by_id: dict[str, Path] = {}
_lock = threading.Lock()


def register_model(model: SelicModel, device: str | torch.device | None = None) -> Engine:
    """Make an in-memory model (tests, experiments) available to encode/decode by its model id."""
    dev = select_device(device)
    mid = model_id(model.state_dict())
    with _lock:
        engine = _engines.get((mid, str(dev)))
        if engine is None:
            engine = _engines[(mid, str(dev))] = Engine(model, dev, mid)
    return engine


def get_engine(model: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device | None = None) -> Engine:
    """The cached engine for a preset name, a weights path, or a model id already registered."""
    dev = select_device(device)
    with _lock:
        for (mid, d), engine in _engines.items():
            if d == str(dev) and model == mid:
                return engine
        path = _paths_by_id.get(str(model)) or resolve_weights(model)
        key_id = read_metadata(path).get("model_id", "")
        engine = _engines.get((key_id, str(dev)))
        if engine is None:
            net, mid = load_weights(path)
            if key_id and key_id != mid:
                raise ValueError(f"{path}: model id in metadata ({key_id}) does not match its tensors ({mid})")
            engine = _engines[(mid, str(dev))] = Engine(net, dev, mid)
            _paths_by_id[mid] = path
        return engine


def _search_paths() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("SELIC_MODEL_PATH", "").split(os.pathsep) if p]
    files: list[Path] = []
    for p in [WEIGHTS_DIR, *extra]:
        files += sorted(p.glob("*.safetensors")) if p.is_dir() else [p] if p.is_file() else []
    return files


def engine_for_id(mid: str, device: str | torch.device | None = None) -> Engine:
    """The engine whose decoder weights have this id: loaded, registered, shipped, or on $SELIC_MODEL_PATH."""
    dev = select_device(device)
    with _lock:
        engine = _engines.get((mid, str(dev)))
        if engine is None:
            other = next((e for (m, _), e in _engines.items() if m == mid), None)
            if other is not None:
                engine = _engines[(mid, str(dev))] = Engine(other.model, dev, mid)
    if engine is not None:
        return engine
    for path in _search_paths():
        try:
            if read_metadata(path).get("model_id") == mid:
                shipped = path.parent == WEIGHTS_DIR
                return get_engine(path.stem.removeprefix("selic-") if shipped else path, device)
        except (OSError, ValueError):
            continue
    raise UnknownModelError(
        f"this file needs selic model {mid}, which is not installed; known models: "
        f"{sorted({m for m, _ in _engines} | set(_paths_by_id)) or 'none'}. Put its .safetensors file on "
        "$SELIC_MODEL_PATH or upgrade selic."
    )


def encode(
    image: Image.Image | np.ndarray,
    quality: float = DEFAULT_QUALITY,
    caption: str | bool | None = None,
    *,
    model: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    store_caption: bool = False,
    metadata: dict[str, bytes] | None = None,
) -> bytes:
    """Compress an image to .selic bytes (see Engine.encode)."""
    return get_engine(model, device).encode(image, quality, caption, store_caption=store_caption, metadata=metadata)


def decode(data: bytes, *, device: str | torch.device | None = None) -> Image.Image:
    """Decompress .selic bytes to a PIL image in the original mode (RGB, L, RGBA or LA)."""
    f = unpack(data)
    check_pixels(f.header)
    image = engine_for_id(f.header.model_id, device).decode_file(f)
    image.info.update({k: v.decode("utf-8", "replace") if k in ("caption", "xmp") else v for k, v in f.metadata.items()})
    image.info["quality"] = f.header.quality
    image.info["model"] = f.header.model_id
    return image


def check_pixels(header: Header) -> None:
    """Pillow's decompression-bomb rule, before anything is allocated."""
    Image._decompression_bomb_check(header.size)


def probe(data: bytes) -> Header:
    """Read the header only: size, mode, quality, model id. Needs no model."""
    return read_header(data)
