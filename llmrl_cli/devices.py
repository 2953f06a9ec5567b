"""Device selection shared by the encoder, the Q-network and the local prior."""

from __future__ import annotations

import torch

from .errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a user error."""
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r}; choose one of: auto, cpu, cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


DTYPE_CHOICES = ("auto", "bfloat16", "float32")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA, float32 on CPU.

    bf16 on a CPU is opt-in (``prior_dtype: bfloat16``). It is faster on CPUs with native bf16
    (AMX), but oneDNN's bf16 kernels keep memory for every matrix shape they meet, so a long
    run's memory grows without bound (docs/differences.md), and its numbers differ from fp32's
    by bf16 rounding, so a CPU's results would depend on its instruction set."""
    if name not in DTYPE_CHOICES:
        raise UserError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPE_CHOICES)}")
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
