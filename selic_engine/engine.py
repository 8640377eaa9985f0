"""The cached inference engine: one loaded model per (weights, device), shared by every thread.

Decoding needs only the bitstream and the decoder weights named by the file's model id;
the semantic models are imported and loaded on the encode path only.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from PIL import Image

from . import __version__, imaging
from .config import DEFAULT_MODEL, Precision
from .container import DecoderTag, Header, SelicFile, pack
from .errors import DesyncError, UnknownModelError
from .model import Architecture
from .model.determinism import onednn_conv
from .model.tiling import tile_size
from .precision import onednn_bf16, resolve
from .weights import WEIGHTS_DIR, DecoderRelease, released_decoders, resolve_weights
from .weights.files import load_weights, model_id, read_metadata, weights_digest

#: This release as (major, minor, patch): what the decoder tag of every file it writes records.
RELEASE = tuple(int(part) for part in __version__.split(".")[:3])


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

    def __init__(self, model: Architecture, device: torch.device, mid: str, embedder: str | None = None) -> None:
        self.model = model.coding_layout(device)
        self.device = device
        self.model_id = mid
        self.config = model.config
        #: The text embedder the encoder was trained with (weights metadata; None: not recorded).
        self.embedder = embedder
        self._warned_embedders: set[str] = set()
        release = next((r for r in released_decoders() if r.model_id == mid), None)
        #: The released decoder version this engine's files need (None: development weights), as files tag it.
        self.decoder = DecoderTag(release.version, RELEASE) if release else None

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
                self._check_embedder((semantic.text_embedder_info() or {}).get("name"))
        with onednn_conv():
            coded = self.model.compress(x.to(self.device), quality, embedding, tile,
                                        dtype=transform_dtype(precision, self.device))
        meta = dict(metadata or {})
        if store_caption and text:
            meta["caption"] = text.encode("utf-8")
        header = Header(self.model_id, image.width, image.height, image.mode, quality, coded.symbol_hash)
        return pack(SelicFile(header, coded.z_stream, coded.y_stream, alpha, meta, self.decoder))

    def _check_embedder(self, active: str | None) -> None:
        """Installing another embedder must not silently change what an encode means: say so, once each."""
        if self.embedder is None or active == self.embedder or active in self._warned_embedders:
            return
        self._warned_embedders.add(str(active))
        warnings.warn(f"these weights were trained with text vectors from {self.embedder}, but the active text "
                      f"embedder is {active}: captions steer this encoder differently than in training (files stay "
                      "valid). Train an encoder adapter for it: selic train --adapter --embedder hook", stacklevel=4)

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
        alpha = None if f.alpha is None else imaging.alpha_plane(f.alpha, h.size)  # damaged: refused before g_s
        try:
            with onednn_conv():
                pixels = self.model.decompress(f.z_stream, f.y_stream, h.quality, (h.height, h.width), tile,
                                               check_symbols=check, dtype=dtype)
        except DesyncError:
            raise
        except (RuntimeError, ValueError, OverflowError) as exc:  # what a damaged latent can still provoke in torch
            raise DesyncError(f"latent stream could not be decoded: {exc}") from exc
        return imaging.merge(pixels, h.mode, alpha)


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


def register_model(model: Architecture, device: str | torch.device | None = None) -> Engine:
    """Make an in-memory model (tests, experiments) available to encode/decode by its model id.

    The engine codes with its own copy: the caller's model is left as it was (coding moves the
    probability side to float64 on the CPU), and later changes to it do not reach the engine.
    """
    dev = select_device(device)
    with _lock:
        key = (weights_digest(model), str(dev))
        if key not in _registered:
            _registered[key] = Engine(copy.deepcopy(model), dev, model_id(model.state_dict(), model.config))
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
        engine = _loaded[key] = Engine(net, dev, mid, read_metadata(key[0]).get("embedder"))
        while len(_loaded) > MAX_LOADED_ENGINES:
            _loaded.popitem(last=False)
        return engine


def _search_paths() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("SELIC_MODEL_PATH", "").split(os.pathsep) if p]
    files: list[Path] = []
    for p in [WEIGHTS_DIR, *extra]:
        files += sorted(p.glob("*.safetensors")) if p.is_dir() else [p] if p.is_file() else []
    return files


def _engine_for_path(path: Path, device: str | torch.device | None) -> Engine:
    shipped = path.parent == WEIGHTS_DIR
    return get_engine(path.stem.removeprefix("selic-") if shipped else path, device)


def engine_for_id(mid: str, device: str | torch.device | None = None, tag: DecoderTag | None = None) -> Engine:
    """An engine whose decoder has this id: loaded, registered, a released decoder of this package (found in
    its manifest, loaded on first use), or weights on $SELIC_MODEL_PATH. tag: the file's decoder tag, which
    makes the error for a missing decoder say which release wrote the file."""
    dev = select_device(device)
    with _lock:
        same_id = [e for e in _engines() if e.model_id == mid]
        engine = next((e for e in same_id if e.device == dev), None)
    if engine is not None:
        return engine
    registered = next((e for e in same_id if e in _registered.values()), None)
    if registered is not None:  # an in-memory model, registered for another device
        return register_model(registered.model, dev)
    released = released_decoders()
    release = next((r for r in released if r.model_id == mid), None)
    if release is not None:
        return _engine_for_path(release.path, device)
    for path in _search_paths():
        try:
            if read_metadata(path).get("model_id") == mid:
                return _engine_for_path(path, device)
        except (OSError, ValueError):
            continue
    raise UnknownModelError(_missing_decoder(mid, tag, released))


def _missing_decoder(mid: str, tag: DecoderTag | None, released: list[DecoderRelease]) -> str:
    """Why a file's decoder is missing, and what to do: never 'upgrade' to someone who has the newer release."""
    have = ", ".join(f"v{r.version}" for r in released) or "none"
    newest = released[-1].version if released else 0
    if tag is not None and tag.version > newest:
        return (f"this file was written by {tag.writer} with decoder v{tag.version} (id {mid}), newer than any "
                f"decoder of selic {__version__} (it has {have}): install {tag.writer} or later to open it")
    if tag is not None:
        return (f"this file names decoder v{tag.version} with id {mid}, but selic {__version__}'s v{tag.version} has "
                "another id: the file is damaged, or was written by a modified selic")
    return (f"this file needs decoder {mid}, which no selic release has (releases keep decoders {have}): it was "
            "written with development weights. If you have them, open it with $SELIC_MODEL_PATH=WEIGHTS.safetensors, "
            "or re-encode it for this release with `selic convert FILE --from-weights WEIGHTS.safetensors -o DIR`")
