"""Function-preserving widening (Net2Net-style) of a trained model to a larger N.

Training is slow on a CPU, so a wider model should start from what the narrower one learned
rather than from scratch. The wider model gets the trained weights in the leading slice of every
tensor; the new units start from their fresh initialisation, and every weight from a new unit
into an old one is zero, so the wider model computes exactly what the narrow one did (up to
float rounding) and the new units grow in as training finds a use for them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..model import Architecture, build_model


def widenable(old: ModelConfig, new: ModelConfig) -> bool:
    """Only N (the width of g_a, g_s, h_a and h_s) may grow; everything else must match."""
    return new.N >= old.N and dataclasses.replace(old, N=new.N, name=new.name) == new


def _leading(shape: torch.Size) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def widen(model: Architecture, config: ModelConfig, seed: int = 0) -> Architecture:
    """A model of `config` (wider N) that computes what `model` computes."""
    if not widenable(model.config, config):
        raise ValueError(f"cannot widen {model.config} to {config}: only N may grow")
    with torch.random.fork_rng(devices=[]):  # seeded fresh units, without resetting the caller's RNG
        torch.manual_seed(seed)
        wide = build_model(config)
    old_state = model.state_dict()
    state = wide.state_dict()
    params = dict(wide.named_parameters())
    for key, value in old_state.items():
        if key not in params or state[key].shape == value.shape:  # buffers: the entropy tables, taken as they are
            state[key] = value.clone()
        else:
            state[key] = state[key].clone()
            state[key][_leading(value.shape)] = value
    # Cut every path from a new unit into an old one: the old units then compute what they did.
    for name, module in wide.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        key = f"{name}.weight"
        old: Tensor = old_state[key]
        w = state[key]
        if w.shape == old.shape:
            continue
        if isinstance(module, nn.ConvTranspose2d):  # weight: (in, out, kh, kw)
            w[old.shape[0]:, : old.shape[1]] = 0
        else:  # weight: (out, in, kh, kw)
            w[: old.shape[0], old.shape[1]:] = 0
    # GDN's gamma couples channel pairs; its fresh off-diagonal entries already encode zero.
    wide.load_state_dict(state)
    return wide
