"""Counting a network's multiply-accumulates: the cost measure decoder versions are budgeted in (issue 31: v2's g_s
at a quarter of v1's), used by the speed benchmark and by training stages that log a student's cost.

Imports torch only when called, like the benchmarks that use it.
"""

from __future__ import annotations

from typing import Any


def conv_macs(module: Any, *inputs: Any) -> int:
    """Multiply-accumulates of every 2-D convolution, plain or transposed, in one call of module(*inputs)
    (hooks, one extra call)."""
    import torch

    macs = 0

    def count(conv: torch.nn.Conv2d | torch.nn.ConvTranspose2d, args: Any, out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = conv.kernel_size
        if isinstance(conv, torch.nn.ConvTranspose2d):  # each input value is spread over a kernel of outputs
            macs += args[0].numel() * (conv.out_channels // conv.groups) * kh * kw
        else:
            macs += out.numel() * (conv.in_channels // conv.groups) * kh * kw

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return macs
