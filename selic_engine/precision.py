"""Which arithmetic the transforms run in on this machine: one decision for training and coding."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

from .config import Precision


@cache
def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them CPU bfloat16 is emulated (measured 20x slower than float32 here)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False  # not Linux: assume the safe float32
    return "avx512_bf16" in flags or "amx_bf16" in flags


@cache
def onednn_bf16() -> bool:
    """oneDNN's bfloat16 convolutions, which the coding path uses, need AVX512 BW/VL/DQ or AVX-NE-CONVERT."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine_kind() -> str:
    """A short label for logs and benchmarks: timings differ several-fold between these kinds."""
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name()}"
    return "cpu-avx512bf16" if cpu_has_native_bf16() else "cpu-no-bf16"


def resolve(precision: Precision, device: torch.device | str) -> torch.dtype:
    """"auto" -> bfloat16 where it is native, float32 elsewhere; an explicit choice is honoured as given."""
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', not {precision!r}")
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() and onednn_bf16() else torch.float32
