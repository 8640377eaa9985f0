"""Exponential moving average of the weights: what validation and export use.

An average over the last ~1/(1-decay) steps removes most of the step noise that end-of-run learning-rate drops
used to remove, without a schedule that restarts each run. Built on torch's AveragedModel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class FrozenExactAverage(AveragedModel):
    """An AveragedModel whose frozen parameters (the decoder under --adapter) are the model's, copied.

    Averaging a frozen weight is not a no-op: the lerp turns -0.0 into +0.0, which changes the model id
    (a digest of the decoder's bytes) of weights whose decoder never trained.
    """

    def update_parameters(self, model: nn.Module) -> None:
        super().update_parameters(model)
        with torch.no_grad():
            for kept, param in zip(self.module.parameters(), model.parameters(), strict=True):
                if not param.requires_grad:
                    kept.copy_(param)


def weight_average(model: nn.Module, decay: float, state: dict[str, Any] | None = None) -> FrozenExactAverage | None:
    """An EMA of `model`'s parameters (None when decay is 0), restored from a checkpoint's `state` when given.

    Without a saved state (a new run, or a checkpoint from before averaging) the average starts at the
    current weights.
    """
    if not decay:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), not {decay}")
    average = FrozenExactAverage(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    if state is not None:
        average.load_state_dict(state)
    else:
        average.update_parameters(model)  # the first update copies the weights
    return average


def averaged_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The model state dict inside a saved average (AveragedModel keeps it under `module.`)."""
    return {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}

