"""The optimisers: Adam on the network (clipped, a step with non-finite gradients skipped) and Adam on the
entropy bottleneck's quantiles (compressai's aux loss), with the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import TrainConfig
from ..model import Architecture

MAX_BAD_STEPS = 50  # consecutive steps with non-finite gradients before training gives up


class FiniteSteps:
    """Backpropagate, clip and step one optimiser, skipping a step whose gradients are not finite.

    One bad batch (a NaN or inf anywhere) must not poison the weights, their average and the checkpoints: its
    step is skipped; MAX_BAD_STEPS in a row end the run. Shared by every training stage.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], clip_grad: float) -> None:
        self.optimizer, self.params, self.clip_grad = optimizer, params, clip_grad
        self.skipped = 0  # steps skipped for non-finite gradients, in this session
        self._bad_in_a_row = 0

    def step(self, loss: torch.Tensor, step: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad or math.inf)
        if torch.isfinite(grad_norm):  # (the same on every DDP rank: the gradients are all-reduced)
            self.optimizer.step()
            self._bad_in_a_row = 0
            return
        self._bad_in_a_row += 1
        self.skipped += 1
        if self._bad_in_a_row > MAX_BAD_STEPS:
            raise FloatingPointError(f"{self._bad_in_a_row} steps in a row had non-finite gradients (step {step}): "
                                     "lower --lr, or resume from the last checkpoint")


class Optimizers:
    """What changes the weights. --adapter trains the encoder-only modules and leaves the quantiles (and so the
    hyper-latent's entropy tables) as they are."""

    def __init__(self, model: Architecture, cfg: TrainConfig) -> None:
        if cfg.adapter:
            for name, p in model.named_parameters():
                p.requires_grad_(model.module_group(name) == "encoder")
        self.model, self.cfg = model, cfg
        aux_params = model.latent_codec.aux_parameters()
        self.params = [p for p in model.parameters() if p.requires_grad and all(p is not a for a in aux_params)]
        aux_params = [] if cfg.adapter else aux_params
        self.net = torch.optim.Adam(self.params, lr=cfg.lr)
        self.aux = torch.optim.Adam(aux_params, lr=cfg.aux_lr) if aux_params else None
        self._net_steps = FiniteSteps(self.net, self.params, cfg.clip_grad)

    @property
    def skipped(self) -> int:
        """Steps skipped for non-finite gradients, in this session."""
        return self._net_steps.skipped

    def set_lr(self, step: int) -> float:
        """The schedule: cfg.lr, a tenth of it from cfg.lr_decay_at on. Returns the rate set."""
        lr = self.cfg.lr * (0.1 if self.cfg.lr_decay_at and step >= self.cfg.lr_decay_at else 1.0)
        for g in self.net.param_groups:
            g["lr"] = lr
        return lr

    def step(self, loss: torch.Tensor, step: int) -> None:
        """Backpropagate loss and step the network (a non-finite step skipped: FiniteSteps), then the quantiles."""
        self._net_steps.step(loss, step)
        if self.aux is not None:
            self.aux.zero_grad(set_to_none=True)
            self.model.aux_loss().backward()
            self.aux.step()

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's optimiser entries."""
        state = {"optimizer": self.net.state_dict()}
        if self.aux is not None:
            state["aux_optimizer"] = self.aux.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint (one without an aux optimiser leaves this one fresh)."""
        self.net.load_state_dict(state["optimizer"])
        if self.aux is not None and "aux_optimizer" in state:
            self.aux.load_state_dict(state["aux_optimizer"])
