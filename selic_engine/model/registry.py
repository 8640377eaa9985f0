"""The architecture registry: a model config names its architecture, and this builds it (compressai's
`register_model`, for decoder versions).

Every released decoder stays registered for ever, under the name its weights files record; a new entropy
model or synthesis is one new class plus one `@register_architecture` line, and the older ones load unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import ClassVar, TypeVar

import torch
from compressai.models import CompressionModel

from ..config import ModelConfig
from ..entropy.bands import BandedLatentCodec
from .geometry import Geometry


class Architecture(CompressionModel):
    """What the engine, the weights files and training ask of a model class.

    forward / compress / decompress as in compressai's models; the class fixes its module groups (which
    top-level children the encoder runs, which the decoder needs) and its geometry.
    """

    name: ClassVar[str]
    #: Modules (state-dict prefixes) run by the encoder alone: all that an adapter retrains.
    ENCODER_MODULES: ClassVar[tuple[str, ...]]
    #: Modules the decoder needs, and all it needs: the decoder id hashes these.
    DECODER_MODULES: ClassVar[tuple[str, ...]]
    geometry: ClassVar[Geometry]
    #: Config fields that only the encoder side depends on: an adapter may change them, the decoder id ignores them.
    ENCODER_CONFIG_FIELDS: ClassVar[tuple[str, ...]] = ("name", "text_dim", "fusion")
    config: ModelConfig
    latent_codec: BandedLatentCodec

    @classmethod
    def module_group(cls, key: str) -> str:
        """'encoder' or 'decoder' for a state-dict key; a key of neither group is an error, never skipped."""
        for group, prefixes in (("encoder", cls.ENCODER_MODULES), ("decoder", cls.DECODER_MODULES)):
            if any(key == p or key.startswith(p + ".") for p in prefixes):
                return group
        raise ValueError(f"{key!r} belongs to no module group of architecture {cls.name!r}")

    @classmethod
    def decoder_id(cls, state: dict[str, torch.Tensor], config: ModelConfig) -> str:
        """16 hex digits naming the exact decoder a file needs: the architecture, its config and the
        decoder-side tensors (a later architecture may not override this; v1 keeps its own, frozen)."""
        decoder_config = {k: v for k, v in asdict(config).items() if k not in cls.ENCODER_CONFIG_FIELDS}
        h = hashlib.sha256(f"{cls.name}\n{json.dumps(decoder_config, sort_keys=True)}\n".encode())
        return digest_tensors(state, cls, "decoder", h)


def digest_tensors(state: dict[str, torch.Tensor], arch: type[Architecture], group: str | None,
                   h: hashlib._Hash | None = None) -> str:
    """sha256 prefix over the (name, float32 bytes) of the tensors of one module group (None: all), by name."""
    h = h or hashlib.sha256()
    for name in sorted(state):
        if group is None or arch.module_group(name) == group:
            t = state[name].detach().cpu().contiguous()
            t = t.float() if t.is_floating_point() else t
            h.update(name.encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


ARCHITECTURES: dict[str, type[Architecture]] = {}
A = TypeVar("A", bound=type[Architecture])


def register_architecture(name: str) -> Callable[[A], A]:
    """Class decorator: configs whose `architecture` is `name` build this class."""

    def register(cls: A) -> A:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered already")
        cls.name = name
        ARCHITECTURES[name] = cls
        return cls

    return register


def architecture(name: str) -> type[Architecture]:
    """The class registered under `name`; an unknown one was written by a newer selic."""
    if name not in ARCHITECTURES:
        from .. import __version__
        from ..errors import NewerSelicError

        raise NewerSelicError(f"architecture {name!r} is unknown to selic {__version__} (it knows "
                              f"{', '.join(sorted(ARCHITECTURES))}): these weights were written by a newer selic; "
                              "upgrade selic to use them")
    return ARCHITECTURES[name]


def build_model(config: ModelConfig) -> Architecture:
    """A freshly initialised model of config's architecture."""
    return architecture(config.architecture)(config)
