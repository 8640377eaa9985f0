"""The cached inference engine: one loaded model per (weights, device), shared by every thread.

Decoding needs only the bitstream and the decoder weights named by the file's model id;
the semantic models are imported and loaded on the encode path only.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from PIL import Image

from . import imaging
from .config import DEFAULT_MODEL, Precision
from .container import Header, SelicFile, pack
from .errors import DesyncError, UnknownModelError
from .model import SelicModel
from .model.determinism import onednn_conv
from .model.tiling import tile_size
from .precision import onednn_bf16, resolve
from .weights import WEIGHTS_DIR, resolve_weights
from .weights.files import load_weights, model_id, read_metadata, weights_digest


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




class Engine:
    """A model in coding layout on one device. Thread-safe: inference holds no mutable state."""

    def __init__(self, model: SelicModel, device: torch.device, mid: str) -> None:
        self.model = model.coding_layout(device)
        self.device = device
        self.model_id = mid
        self.config = model.config

    def encode(
        self,
        image: Image.Image,
        quality: float,
        caption: str | bool | None = None,
        *,
        store_caption: bool = False,
        metadata: dict[str, bytes] | None = None,
        precision: Precision | None = None,
        tile: int | None = None,
    ) -> bytes:
        """Encode to .selic bytes, with what `saving.encode_with_options` has checked and prepared: an image in
        a stored mode (imaging.normalize_mode), a quality from saving.check_quality, the metadata to keep.
        caption: text, None (find one), or False (skip the semantic branch); tile: see saving.encode."""
        x, alpha = imaging.split(image)
        text, embedding = None, None
        if caption is not False and self.config.fusion != "none":
            from . import semantic

            text = semantic.resolve_caption(image, caption if isinstance(caption, str) else None)
            if text:
                embedding = torch.from_numpy(semantic.embed_texts([text], self.config.text_dim))
        with onednn_conv():
            coded = self.model.compress(x.to(self.device), quality, embedding, tile,
                                        dtype=transform_dtype(precision, self.device))
        meta = dict(metadata or {})
        if store_caption and text:
            meta["caption"] = text.encode("utf-8")
        header = Header(self.model_id, image.width, image.height, image.mode, quality, coded.symbol_hash)
        return pack(SelicFile(header, coded.z_stream, coded.y_stream, alpha, meta))

    def decode_file(
        self, f: SelicFile, precision: Precision | None = None, *, tile: int | None = None
    ) -> Image.Image:
        """Decode a parsed file. Hostile streams end in a SelicFormatError (DesyncError), never a crash.

        Both rANS streams are decoded through entropy.guard.GuardedDecoder, and the decoded
        symbols are checked against the file's hash before g_s runs, so a damaged or forged
        latent is refused before the expensive (and, for a huge claimed size, slow) synthesis.
        """
        h = f.header

        def check(digest: bytes) -> None:
            if digest != h.symbol_hash:
                raise DesyncError("decoded latent symbols do not match the file's hash: the file is damaged, or "
                                  "this machine's decoder disagrees with the encoder's")

        dtype = transform_dtype(precision, self.device)  # outside the try: a bad option is not a damaged file
        tile = tile_size(tile)  # likewise
        try:
            with onednn_conv():
                pixels = self.model.decompress(f.z_stream, f.y_stream, h.z_shape, h.quality, (h.height, h.width),
                                                 tile, check_symbols=check, dtype=dtype)
        except DesyncError:
            raise
        except (RuntimeError, ValueError, OverflowError) as exc:  # what a damaged latent can still provoke in torch
            raise DesyncError(f"latent stream could not be decoded: {exc}") from exc
        return imaging.merge(pixels, h.mode, f.alpha)


#: Engines loaded from weights files that stay cached at once, least recently used dropped first (each holds
#: its model: about 50 MB in float32 for the small preset); a dropped one is loaded again when next needed.
MAX_LOADED_ENGINES = 4

# Two caches, both behind _lock. Registered in-memory models stay until the process ends (they cannot be loaded
# again), one engine per (digest of *all* weights, device): an encoder adapter shares its decoder, and so its
# model id, with the stock model, but must not share its engine. Engines loaded from files are keyed by
# (path, device). Decoding looks engines up by model id in both.
_registered: dict[tuple[str, str], Engine] = {}
_loaded: OrderedDict[tuple[Path, str], Engine] = OrderedDict()
_lock = threading.Lock()


def _engines() -> list[Engine]:
    return [*_registered.values(), *_loaded.values()]


def register_model(model: SelicModel, device: str | torch.device | None = None) -> Engine:
    """Make an in-memory model (tests, experiments) available to encode/decode by its model id.

    The engine codes with its own copy: the caller's model is left as it was (coding moves the
    probability side to float64 on the CPU), and later changes to it do not reach the engine.
    """
    dev = select_device(device)
    with _lock:
        key = (weights_digest(model.state_dict()), str(dev))
        if key not in _registered:
            _registered[key] = Engine(copy.deepcopy(model), dev, model_id(model.state_dict()))
        return _registered[key]


def get_engine(model: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device | None = None) -> Engine:
    """The cached engine for a preset name, a weights path, or the model id of a cached engine."""
    dev = select_device(device)
    with _lock:
        for engine in _engines():
            if engine.device == dev and model == engine.model_id:
                return engine
        key = (resolve_weights(model).resolve(), str(dev))
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
        net, mid = load_weights(key[0])
        engine = _loaded[key] = Engine(net, dev, mid)
        while len(_loaded) > MAX_LOADED_ENGINES:
            _loaded.popitem(last=False)
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
        same_id = [e for e in _engines() if e.model_id == mid]
        engine = next((e for e in same_id if e.device == dev), None)
    if engine is not None:
        return engine
    registered = next((e for e in same_id if e in _registered.values()), None)
    if registered is not None:  # an in-memory model, registered for another device
        return register_model(registered.model, dev)
    for path in _search_paths():
        try:
            if read_metadata(path).get("model_id") == mid:
                shipped = path.parent == WEIGHTS_DIR
                return get_engine(path.stem.removeprefix("selic-") if shipped else path, device)
        except (OSError, ValueError):
            continue
    known = sorted({e.model_id for e in _engines()}) or "none"
    raise UnknownModelError(
        f"this file needs selic model {mid}, which is not installed; known models: {known}. "
        "Put its .safetensors file on $SELIC_MODEL_PATH or upgrade selic."
    )
