"""Function-preserving widening (Net2Net-style) of a trained model to a larger N, or (decoder v2) wider light-g_s
channels.

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
    """Only widths may grow: N (v1's g_a, g_s, h_a and h_s; v2's g_a) and decoder v2's light-g_s channels;
    everything else must match."""
    v2 = old.v2
    if v2 is not None and new.v2 is not None:
        old_widths, new_widths = v2.synthesis_widths, new.v2.synthesis_widths
        if len(new_widths) != len(old_widths) or any(n < o for n, o in zip(new_widths, old_widths, strict=True)):
            return False
        v2 = dataclasses.replace(v2, synthesis_widths=new_widths)
    return new.N >= old.N and dataclasses.replace(old, N=new.N, name=new.name, v2=v2) == new


def _leading(shape: torch.Size) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def widen(model: Architecture, config: ModelConfig, seed: int = 0) -> Architecture:
    """A model of `config` (wider N) that computes what `model` computes."""
    if not widenable(model.config, config):
        raise ValueError(f"cannot widen {model.config} to {config}: only N and v2's synthesis widths may grow")
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
    # A residual block whose input and output were equally wide had no 1x1 skip (compressai's ResidualBlock adds
    # the input itself); widened unequally it has one, which starts as that identity on the old channels.
    for name, module in wide.named_modules():
        key = f"{name}.skip.weight"
        if isinstance(getattr(module, "skip", None), nn.Conv2d) and key not in old_state:
            width = old_state[f"{name}.conv1.weight"].shape[1]
            state[key][:width] = 0
            state[key][:width, :width, 0, 0] = torch.eye(width)
            state[f"{name}.skip.bias"][:width] = 0
    # Cut every path from a new unit into an old one: the old units then compute what they did.
    for name, module in wide.named_modules():
        key = f"{name}.weight"
        if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) or key not in old_state:
            continue
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
