"""Thread-count-independent convolutions for decoding on the CPU.

oneDNN picks its blocking from the thread count, so float32 g_s output can differ in the last
bit between 1 and 2 threads, and a pixel can round the other way. Inside `native_conv()`,
2-D convolutions of this thread run on ATen's reference kernel instead (about 3x slower,
bit-identical for any thread count). Torch-function modes are thread-local, so other threads
and other code in the process are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class native_conv(TorchFunctionMode):  # noqa: N801 - used as a context manager, like torch.no_grad
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d) and args[0].device.type == "cpu":
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            bound = dict(zip(names, args, strict=False)) | kwargs
            if _pair(bound.get("dilation", 1)) == (1, 1) and bound.get("groups", 1) == 1 \
                    and not isinstance(bound.get("padding", 0), str):
                w = bound["weight"]
                return torch.ops.aten._slow_conv2d_forward(
                    bound["input"], w, tuple(w.shape[-2:]), bound.get("bias"),
                    _pair(bound.get("stride", 1)), _pair(bound.get("padding", 0)))
        return func(*args, **kwargs)
