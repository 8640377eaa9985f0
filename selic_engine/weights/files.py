"""Weights files: safetensors only, with the model config in the metadata and the decoder id.

Loading, saving and exporting need torch and the model; the paths, manifest and module groups beside them
(selic_engine.weights) do not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..config import ModelConfig
from ..model import Architecture, architecture, build_model
from ..model.registry import digest_tensors
from . import record_in_manifest


def model_id(state: dict[str, torch.Tensor], config: ModelConfig) -> str:
    """The decoder id (16 hex digits) a file records: its architecture's id of the decoder side, so that a
    file names the exact decoder it needs. Every key must belong to a module group of the architecture."""
    arch = architecture(config.architecture)
    for key in state:
        arch.module_group(key)
    return arch.decoder_id(state, config)


def weights_digest(model: Architecture) -> str:
    """A digest over every tensor, encoder side included (adapters differ only there)."""
    return digest_tensors(model.state_dict(), type(model), None)


def round_weights(model: Architecture, dtype: torch.dtype) -> None:
    """Round every float tensor to `dtype` in place (kept float32), so that tables built next match the file."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                rounded = t.to(dtype)
                if not torch.isfinite(rounded).all() and torch.isfinite(t).all():
                    raise ValueError(f"{name}: values out of the range of {dtype}")
                t.copy_(rounded)


def save_weights(
    model: Architecture, path: Path, extra: dict[str, str] | None = None, dtype: torch.dtype = torch.float32
) -> str:
    """Write weights (with entropy tables) atomically, floats stored as `dtype`; returns the model id.

    Storing float16 halves the file; call round_weights (then update the entropy tables) first, so
    the model that made the tables is the one in the file. Loading upcasts exactly.
    """
    state = {k: v.detach().cpu().to(dtype).contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    mid = model_id(state, model.config)
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


#: compressai's likelihood floor (1e-9), a buffer in every entropy model's state: a float16 file stores it as 0, and
#: log2 of a zero likelihood made rate estimates and training from such a file (the shipped weights, the GPU burst's
#: pack) infinite. No coded symbol depends on it, so loading keeps the value the model is built with.
LIKELIHOOD_FLOOR = ".likelihood_lower_bound.bound"


def load_weights(path: Path) -> tuple[Architecture, str]:
    """Returns (model in eval mode on the CPU, model id recomputed from the tensors).

    A file whose recorded model id differs from its tensors is refused: files would name the wrong decoder.
    """
    with _open(path) as f:
        meta = f.metadata() or {}
        if "config" not in meta:
            raise ValueError(f"{path}: not a selic weights file (no config metadata)")
        config = ModelConfig.from_json(meta["config"])  # a newer selic's config or architecture: NewerSelicError
        state = {k: f.get_tensor(k) for k in f.keys()}
    mid, recorded = model_id(state, config), meta.get("model_id")
    if recorded and recorded != mid:
        raise ValueError(f"{path}: model id in metadata ({recorded}) does not match its tensors ({mid})")
    model = build_model(config)
    built = model.state_dict()
    model.load_state_dict({k: built[k] if k.endswith(LIKELIHOOD_FLOOR) else v.float() if v.is_floating_point() else v
                           for k, v in state.items()})
    return model.eval(), mid


def export(model: Architecture, path: Path, metadata: dict[str, str] | None = None, float16: bool = False) -> str:
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
