"""The Q-head: an MLP on frozen (state, action) text embeddings, dim -> 64 -> 64 -> 1 (ReLU)."""

from __future__ import annotations

import torch
from torch import nn


class QHead(nn.Module):
    """Q(s, a) from the encoder's vector of ``"Observation: {s}, Action: {a}."``."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., dim] -> [...]``"""
        return self.net(features).squeeze(-1)
