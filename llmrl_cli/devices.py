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


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AVX512-BF16/AMX). Without them bf16 is
    emulated and was 6x slower than fp32 for SmolLM2 prefill on an AVX2 EPYC here."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CUDA, and on CPUs with native bf16; float32 otherwise."""
    if name not in DTYPE_CHOICES:
        raise UserError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPE_CHOICES)}")
    if name == "auto":
        fast = device.type == "cuda" or cpu_has_fast_bf16()
        return torch.bfloat16 if fast else torch.float32
    return getattr(torch, name)
