"""Replay buffer of embedded transitions (s,a features; candidate features at s'; r; done).

Storage is preallocated on the CPU; the candidate axis grows when a state offers more
candidates than seen so far (e.g. ALFWorld's admissible lists vary in length).
"""

from __future__ import annotations

import torch


class ReplayBuffer:
    def __init__(self, capacity: int, dim: int, max_candidates: int = 1) -> None:
        self.capacity, self.dim = capacity, dim
        self.features = torch.zeros(capacity, dim)
        self.next_features = torch.zeros(capacity, max_candidates, dim)
        self.next_mask = torch.zeros(capacity, max_candidates, dtype=torch.bool)
        self.reward = torch.zeros(capacity)
        self.done = torch.zeros(capacity)
        self.size = 0
        self.cursor = 0

    def __len__(self) -> int:
        return self.size

    def _grow(self, width: int) -> None:
        extra = width - self.next_mask.shape[1]
        self.next_features = torch.cat(
            [self.next_features, torch.zeros(self.capacity, extra, self.dim)], dim=1
        )
        self.next_mask = torch.cat(
            [self.next_mask, torch.zeros(self.capacity, extra, dtype=torch.bool)], dim=1
        )

    def add(self, features: torch.Tensor, reward: float, done: bool,
            next_features: torch.Tensor | None) -> None:
        """Store one transition; ``next_features`` is ``[n_candidates, dim]`` (None if done)."""
        i = self.cursor
        self.features[i] = features.detach().cpu()
        self.reward[i] = reward
        self.done[i] = float(done)
        self.next_mask[i] = False
        if next_features is not None and len(next_features):
            n = len(next_features)
            if n > self.next_mask.shape[1]:
                self._grow(n)
            self.next_features[i, :n] = next_features.detach().cpu()
            self.next_mask[i, :n] = True
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: torch.Generator, device: torch.device) -> dict:
        idx = torch.randint(self.size, (batch_size,), generator=rng)
        return {
            "features": self.features[idx].to(device),
            "next_features": self.next_features[idx].to(device),
            "next_mask": self.next_mask[idx].to(device),
            "reward": self.reward[idx].to(device),
            "done": self.done[idx].to(device),
        }

    def state_dict(self) -> dict:
        n = self.size
        return {"features": self.features[:n].clone(), "next_features": self.next_features[:n].clone(),
                "next_mask": self.next_mask[:n].clone(), "reward": self.reward[:n].clone(),
                "done": self.done[:n].clone(), "size": n, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        width = state["next_mask"].shape[1]
        if width > self.next_mask.shape[1]:
            self._grow(width)
        self.features[:n] = state["features"]
        self.next_features[:n, :width] = state["next_features"]
        self.next_mask[:n, :width] = state["next_mask"]
        self.reward[:n] = state["reward"]
        self.done[:n] = state["done"]
        self.size, self.cursor = n, state["cursor"]
