"""Weights files: safetensors only, with the model config in the metadata and a decoder-weights id.

Loading, saving and exporting need torch and the model; the paths, manifest and module groups beside them
(selic_engine.weights) do not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..config import ModelConfig
from ..model import SelicModel
from . import DECODER_MODULES, record_in_manifest


def model_id(state: dict[str, torch.Tensor]) -> str:
    """16 hex digits of sha256 over the decoder-side tensors: a file names the exact decoder it needs."""
    return _digest(state, DECODER_MODULES)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """The same digest over every tensor, encoder side included (adapters differ only there)."""
    return _digest(state, None)


def _digest(state: dict[str, torch.Tensor], modules: tuple[str, ...] | None) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        if modules is None or name.split(".", 1)[0] in modules:
            t = state[name].detach().cpu().contiguous()
            t = t.float() if t.is_floating_point() else t
            h.update(name.encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def round_weights(model: SelicModel, dtype: torch.dtype) -> None:
    """Round every float tensor to `dtype` in place (kept float32), so that tables built next match the file."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                rounded = t.to(dtype)
                if not torch.isfinite(rounded).all() and torch.isfinite(t).all():
                    raise ValueError(f"{name}: values out of the range of {dtype}")
                t.copy_(rounded)


def save_weights(
    model: SelicModel, path: Path, extra: dict[str, str] | None = None, dtype: torch.dtype = torch.float32
) -> str:
    """Write weights (with entropy tables) atomically, floats stored as `dtype`; returns the model id.

    Storing float16 halves the file; call round_weights (then update the entropy tables) first, so
    the model that made the tables is the one in the file. Loading upcasts exactly.
    """
    state = {k: v.detach().cpu().to(dtype).contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    mid = model_id(state)
    meta = {"config": model.config.to_json(), "model_id": mid, "storage": str(dtype).removeprefix("torch."),
            **(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.chmod(0o644)  # safetensors creates the file private; weights are meant to be shipped and shared
    tmp.replace(path)
    return mid


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    """safe_open whose parse errors (SafetensorError) become ValueError, like every other bad-file error here."""
    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a valid safetensors file ({exc})") from exc


def read_metadata(path: Path) -> dict[str, str]:
    """The file's metadata (config, model id, storage, training history) without reading a tensor."""
    with _open(path) as f:
        return dict(f.metadata() or {})


def load_weights(path: Path) -> tuple[SelicModel, str]:
    """Returns (model in eval mode on the CPU, model id recomputed from the tensors).

    A file whose recorded model id differs from its tensors is refused: files would name the wrong decoder.
    """
    with _open(path) as f:
        meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{path}: not a selic weights file (no config metadata)")
        state = {k: f.get_tensor(k) for k in f.keys()}
    mid, recorded = model_id(state), meta.get("model_id")
    if recorded and recorded != mid:
        raise ValueError(f"{path}: model id in metadata ({recorded}) does not match its tensors ({mid})")
    model = SelicModel(ModelConfig.from_json(meta["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), mid


def export(model: SelicModel, path: Path, metadata: dict[str, str] | None = None, float16: bool = False) -> str:
    """A trained model -> shipped weights: rounded to the stored precision (in place), entropy tables rebuilt
    from the rounded weights, written with `metadata` and recorded in the manifest beside; returns the model id.

    float16 halves the file; because the tables come from the rounded weights, the model that made them is
    the one in the file, and loading upcasts it exactly.
    """
    dtype = torch.float16 if float16 else torch.float32
    round_weights(model, dtype)
    model.update(force=True)
    mid = save_weights(model.eval(), path, metadata, dtype)
    record_in_manifest(path, mid)
    return mid
