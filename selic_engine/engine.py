"""The cached inference engine: one loaded model per (weights, device), shared by every thread.

Decoding needs only the bitstream and the decoder weights named by the file's model id;
the semantic models are imported and loaded on the encode path only.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import imaging
from .config import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN, Precision
from .container import Header, SelicFile, pack, quantize_quality, read_header, unpack
from .errors import DesyncError, ImageTooLargeError, UnknownModelError
from .model import SelicModel
from .model.determinism import onednn_conv
from .precision import onednn_bf16, resolve
from .weights import WEIGHTS_DIR, resolve_weights
from .weights.files import load_weights, model_id, read_metadata, weights_digest

DEFAULT_MODEL = "small"


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Explicit argument, else $SELIC_DEVICE, else CUDA when present, else CPU."""
    choice = device or os.environ.get("SELIC_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available")
    return dev


def transform_dtype(precision: Precision | None, device: torch.device) -> torch.dtype:
    """The arithmetic of g_a / g_s: the argument, else $SELIC_PRECISION, else "auto" (bfloat16 where native).

    Symbols never depend on it (the probability side is float64); decoded pixels may differ by a few levels
    between float32 and bfloat16, and never between thread counts at one precision.
    """
    dtype = resolve(precision or os.environ.get("SELIC_PRECISION") or "auto", device)  # type: ignore[arg-type]
    if dtype == torch.bfloat16 and device.type == "cpu" and not onednn_bf16():
        raise ValueError("precision 'bfloat16' needs a CPU with AVX512 (BW/VL/DQ) or AVX-NE-CONVERT for oneDNN's "
                         "bfloat16 convolutions, and this one has neither: use 'float32' or 'auto'")
    return dtype


def check_quality(quality: float) -> float:
    q = float(quality)
    if not QUALITY_MIN <= q <= QUALITY_MAX:  # also rejects NaN
        raise ValueError(
            f"quality must be between {QUALITY_MIN:g} and {QUALITY_MAX:g} (fractional allowed), got {quality!r}")
    return quantize_quality(q)


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
        precision: Precision | None = None,
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
        with onednn_conv():
            coded = self.model.compress(x.to(self.device), q, embedding,
                                        dtype=transform_dtype(precision, self.device))
        meta = {k: bytes(v) for k, v in (metadata or {}).items() if v}
        if store_caption and text:
            meta["caption"] = text.encode("utf-8")
        header = Header(self.model_id, image.width, image.height, image.mode, q, coded.symbol_hash)
        return pack(SelicFile(header, coded.z_stream, coded.y_stream, alpha, meta))

    def decode_file(self, f: SelicFile, precision: Precision | None = None) -> Image.Image:
        """Decode a parsed file. Hostile streams end in a SelicFormatError (DesyncError), never a crash.

        Both rANS streams are decoded through entropy.guard.GuardedDecoder, and the decoded
        symbols are checked against the file's hash before g_s runs, so a damaged or forged
        latent is refused before the expensive (and, for a huge claimed size, slow) synthesis.
        """
        h = f.header
        z_shape = (-(-h.height // 64), -(-h.width // 64))

        def check(digest: bytes) -> None:
            if digest != h.symbol_hash:
                raise DesyncError("decoded latent symbols do not match the file's hash: the file is damaged, or "
                                  "this machine's decoder disagrees with the encoder's")

        dtype = transform_dtype(precision, self.device)  # outside the try: a bad option is not a damaged file
        try:
            with onednn_conv():
                pixels = self.model.decompress(f.z_stream, f.y_stream, z_shape, h.quality, (h.height, h.width),
                                                 check_symbols=check, dtype=dtype)
        except DesyncError:
            raise
        except (RuntimeError, ValueError, OverflowError) as exc:  # what a damaged latent can still provoke in torch
            raise DesyncError(f"latent stream could not be decoded: {exc}") from exc
        return imaging.merge(pixels, h.mode, f.alpha)


# Engines are cached by (digest of *all* weights, device): an encoder adapter shares its decoder, and so its
# model id, with the stock model, but must not share its engine. Decoding looks engines up by model id.
_engines: dict[tuple[str, str], Engine] = {}
_by_path: dict[tuple[Path, str], Engine] = {}
_lock = threading.Lock()


def _cache(model: SelicModel, dev: torch.device, mid: str) -> Engine:
    key = (weights_digest(model.state_dict()), str(dev))
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = Engine(model, dev, mid)
    return engine


def register_model(model: SelicModel, device: str | torch.device | None = None) -> Engine:
    """Make an in-memory model (tests, experiments) available to encode/decode by its model id."""
    dev = select_device(device)
    with _lock:
        return _cache(model, dev, model_id(model.state_dict()))


def get_engine(model: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device | None = None) -> Engine:
    """The cached engine for a preset name, a weights path, or the model id of a registered model."""
    dev = select_device(device)
    with _lock:
        for (_, d), engine in _engines.items():
            if d == str(dev) and model == engine.model_id:
                return engine
        path = resolve_weights(model).resolve()
        engine = _by_path.get((path, str(dev)))
        if engine is None:
            net, mid = load_weights(path)
            engine = _by_path[(path, str(dev))] = _cache(net, dev, mid)
        return engine


def _search_paths() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("SELIC_MODEL_PATH", "").split(os.pathsep) if p]
    files: list[Path] = []
    for p in [WEIGHTS_DIR, *extra]:
        files += sorted(p.glob("*.safetensors")) if p.is_dir() else [p] if p.is_file() else []
    return files


def engine_for_id(mid: str, device: str | torch.device | None = None) -> Engine:
    """An engine whose decoder weights have this id: loaded, registered, shipped, or on $SELIC_MODEL_PATH."""
    dev = select_device(device)
    with _lock:
        same_id = [e for e in _engines.values() if e.model_id == mid]
        engine = next((e for e in same_id if e.device == dev), None)
        if engine is None and same_id:  # the same weights, loaded for another device
            engine = _cache(copy.deepcopy(same_id[0].model), dev, mid)
    if engine is not None:
        return engine
    for path in _search_paths():
        try:
            if read_metadata(path).get("model_id") == mid:
                shipped = path.parent == WEIGHTS_DIR
                return get_engine(path.stem.removeprefix("selic-") if shipped else path, device)
        except (OSError, ValueError):
            continue
    known = sorted({e.model_id for e in _engines.values()}) or "none"
    raise UnknownModelError(
        f"this file needs selic model {mid}, which is not installed; known models: {known}. "
        "Put its .safetensors file on $SELIC_MODEL_PATH or upgrade selic."
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
    precision: Precision | None = None,
) -> bytes:
    """Compress an image to .selic bytes (see Engine.encode; precision: see transform_dtype)."""
    return get_engine(model, device).encode(image, quality, caption, store_caption=store_caption, metadata=metadata,
                                            precision=precision)


def decode(
    data: bytes, *, device: str | torch.device | None = None, precision: Precision | None = None
) -> Image.Image:
    """Decompress .selic bytes to a PIL image in the original mode (RGB, L, RGBA or LA).

    Any damaged or hostile input raises a SelicFormatError (a ValueError): bad structure or CRC,
    a size over the decompression-bomb limit (ImageTooLargeError), or latent symbols that fail
    the file's hash (DesyncError).
    """
    f = unpack(data)
    try:
        check_pixels(f.header)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    image = engine_for_id(f.header.model_id, device).decode_file(f, precision)
    image.info.update({k: v.decode("utf-8", "replace") if k == "caption" else v
                       for k, v in f.metadata.items()})
    image.info["quality"] = f.header.quality
    image.info["model"] = f.header.model_id
    return image


def check_pixels(header: Header) -> None:
    """Pillow's decompression-bomb rule, before anything is allocated."""
    Image._decompression_bomb_check(header.size)


def probe(data: bytes) -> Header:
    """Read the header only: size, mode, quality, model id. Needs no model."""
    return read_header(data)
