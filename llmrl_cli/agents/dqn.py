"""DQN and DQN-Prior (Yan et al., ICLR 2025, Sec. 4.1): Q-learning over a candidate set C(s).

C(s) is every admissible action for ``dqn`` and the k actions proposed by the LLM prior for
``dqn-prior`` (duplicates kept: they carry p_LLM). With a frozen text encoder phi and an MLP Q,

    loss = sum_i ( Q(s_i, a_i) - [ r_i + gamma * (1 - done_i) * max_{a' in C(s'_i)} Q_target(s'_i, a') ] )^2

(summed squared error over the batch, per transition, as the paper's code computes it:
value-based/train_overcooked.py:862-876), AdamW, grad-norm clip 1.0, soft (tau) or hard (every
n steps) target updates. Acting picks a candidate index by one of ``EXPLORATIONS``: softmax(Q
(s, a_i) / alpha) over the k proposals -- Proposition 1's direct posterior sampling; the
paper's code writes alpha=10 as a multiplier, i.e. alpha = 0.1 here -- eps-greedy, eps-softmax
(a uniform candidate with probability eps, else softmax; the paper's Salad script) or greedy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..settings import check, setting
from .qnet import QHead

EXPLORATIONS = ("softmax", "eps-greedy", "eps-softmax", "greedy")
#: which finished episodes enter the replay buffer: "off" = all, once; "paper" = the paper's
#: ALFWorld rule (BufferBalance)
BUFFER_BALANCES = ("off", "paper")


@dataclass
class DQNConfig:
    """DQN hyperparameters. Defaults are the paper's Overcooked Tomato settings; the env presets
    set the others (docs/paper-settings.md)."""

    gamma: float = setting(0.99, "discount", paper="0.99", low=0, high=1)
    lr: float = setting(5e-4, "AdamW learning rate", paper="5e-4", above=0)
    weight_decay: float = setting(0.01, "AdamW weight decay", paper="0.01 (AdamW's default)",
                                  low=0)
    grad_clip: float = setting(1.0, "gradient norm clip", paper="1.0", above=0)
    hidden: int = setting(64, "width of the Q head's two hidden layers", paper="64", low=1)
    batch_size: int = setting(64, "transitions per gradient step", unit="transitions",
                              paper="64 (ALFWorld 128)", low=1)
    buffer_size: int = setting(4000, "replay buffer capacity (FIFO)", unit="transitions",
                               paper="4000 (ALFWorld 20000)", low=1)
    target_update: str = setting("soft", "soft: Polyak-average the target every step (tau); "
                                 "hard: copy it every target_update_every steps",
                                 paper="soft (ALFWorld hard)", choices=("soft", "hard"))
    tau: float = setting(0.005, "soft target update rate", paper="0.005", low=0, high=1)
    target_update_every: int = setting(20, "hard target update: gradient steps between copies",
                                       unit="gradient steps", paper="20", low=1)
    exploration: str = setting(
        "softmax", "training's acting rule over the candidates: softmax(Q/alpha), eps-greedy, "
        "eps-softmax (a uniform candidate with probability epsilon, else softmax) or greedy",
        paper="dqn-prior: softmax (Salad eps-softmax, ALFWorld eps-greedy); "
        "dqn: eps-greedy",
        choices=EXPLORATIONS)
    alpha: float = setting(0.1, "softmax temperature (the paper's alpha 10 multiplies Q)",
                           paper="0.1 (written alpha=10)", above=0)
    epsilon: float = setting(0.2, "eps-greedy, eps-softmax: chance of a uniform candidate",
                             paper="0.2", low=0, high=1)
    eval_policy: str = setting("softmax", "evaluation's acting rule (as exploration)",
                               paper="Tomato softmax, Salad and ALFWorld greedy", choices=EXPLORATIONS)
    train_every: int = setting(5, "episodes between training phases", unit="episodes",
                               paper="5 (ALFWorld 10)", low=1)
    train_iters: int = setting(40, "gradient steps per training phase", unit="gradient steps",
                               paper="40", low=0)
    train_passes: float = setting(
        0.0, "> 0: a training phase takes ceil(train_passes x |replay| / batch_size) gradient "
        "steps instead of train_iters", paper="0 (ALFWorld 4)", low=0)
    train_start: int = setting(0, "episodes before the first training phase", unit="episodes",
                               paper="Tomato 0, Salad 20, ALFWorld 40", low=0)
    eval_every: int = setting(20, "episodes between evaluations", unit="episodes",
                              paper="20 (ALFWorld 80)", low=1)
    eval_episodes: int = setting(10, "episodes per evaluation", unit="episodes",
                                 paper="10 (ALFWorld 26)", low=1)
    feature_norm: bool = setting(
        False, "standardise encoder features per dimension with the replay buffer's mean and "
        "std, refit at each training phase (ours: MiniLM's vectors of different actions differ "
        "by ~1e-3 in cosine; docs/differences.md)", paper="false")
    buffer_balance: str = setting("off", "which finished episodes enter the buffer: off = all, "
                                  "once; paper = the paper's ALFWorld rule (BufferBalance)",
                                  paper="off (ALFWorld paper)", choices=BUFFER_BALANCES)

    def validate(self) -> None:
        check(self)


@contextmanager
def update_threads() -> Iterator[None]:
    """Run Q-head updates on one CPU thread.

    The MLP is far too small to gain from intra-op parallelism, and with a second thread
    OpenMP's barriers wait on any other busy core (a prior server, another run): many times
    slower (benchmarks/README.md, "Measurements behind code choices").
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def choose(q: torch.Tensor, policy: str, cfg: DQNConfig, rng: torch.Generator) -> int:
    """Index of the candidate to play, given its Q-values ``[n]`` (duplicates included)."""
    if policy == "greedy":
        return int(q.argmax())
    if policy in ("eps-greedy", "eps-softmax"):
        if float(torch.rand((), generator=rng)) < cfg.epsilon:
            return int(torch.randint(len(q), (), generator=rng))
        if policy == "eps-greedy":
            return int(q.argmax())
    probs = torch.softmax(q.double() / cfg.alpha, dim=0).cpu()
    return int(torch.multinomial(probs, 1, generator=rng))


class BufferBalance:
    """The paper's ALFWorld rule for which finished episodes enter the replay buffer
    (value-based/train_alfworld.py:34-35, 574-595, 780-781).

    With an LLM prior: a success always enters; a failure enters while failures <= successes +
    100 (the script counts successes from 100). Plain DQN: every episode enters, and while the
    count of successes and repeats is below the failures, the episode enters once more -- so in
    a run of failures each failure enters twice.
    """

    def __init__(self, baseline: bool) -> None:
        self.baseline = baseline
        self.good = 0 if baseline else 100
        self.bad = 0

    def copies(self, success: bool) -> int:
        """How many times the episode just finished enters the buffer (0, 1 or more)."""
        admitted = success or self.bad <= self.good or self.baseline
        if admitted:
            self.good += success
            self.bad += not success
        copies = int(admitted)
        while self.baseline and self.good < self.bad:
            copies += 1
            self.good += 1
        return copies

    def state_dict(self) -> dict:
        return {"good": self.good, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.good, self.bad = state["good"], state["bad"]


class DQNAgent:
    """Q-network, target network and optimiser; ``td_loss`` is the loss in the module docstring."""

    def __init__(self, dim: int, cfg: DQNConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.q = QHead(dim, cfg.hidden).to(device)
        self.target = QHead(dim, cfg.hidden).to(device)
        self.target.load_state_dict(self.q.state_dict())
        self.optimizer = torch.optim.AdamW(
            self.q.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.grad_steps = 0
        self.feature_mean = torch.zeros(dim, device=device)
        self.feature_std = torch.ones(dim, device=device)

    def fit_normaliser(self, features: torch.Tensor) -> None:
        """Set the per-dimension standardisation from a sample of features (if enabled)."""
        if not self.cfg.feature_norm or len(features) < 2:
            return
        features = features.to(self.device)
        std = features.std(dim=0)
        self.feature_mean = features.mean(dim=0)
        self.feature_std = std.clamp(min=float(std.mean()) * 0.1 + 1e-6)

    def inputs(self, features: torch.Tensor) -> torch.Tensor:
        return (features.to(self.device) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def q_values(self, features: torch.Tensor) -> torch.Tensor:
        return self.q(self.inputs(features))

    @torch.no_grad()
    def next_value(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """max_{a' in C(s')} Q_target(s', a') per transition; padded candidates masked, 0 when
        C(s') is empty."""
        next_q = self.target(self.inputs(batch["next_features"]))
        next_q = next_q.masked_fill(~batch["next_mask"], -torch.inf)
        best = next_q.max(dim=1).values
        return torch.where(batch["next_mask"].any(dim=1), best, torch.zeros_like(best))

    def td_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """r + gamma (1 - done) max_{a' in C(s')} Q_target(s', a'), per transition."""
        return batch["reward"] + self.cfg.gamma * (1.0 - batch["done"]) * self.next_value(batch)

    def td_error(self, q: torch.Tensor, batch: dict[str, torch.Tensor],
                 reduction: str) -> torch.Tensor:
        """Squared TD error of the Q-values ``q [B]``, summed or averaged."""
        return F.mse_loss(q, self.td_target(batch), reduction=reduction)

    def td_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.td_error(self.q(self.inputs(batch["features"])), batch, "sum")

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.td_loss(batch)

    def update(self, batch: dict[str, torch.Tensor]) -> float:
        """One gradient step; returns the loss."""
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.grad_steps += 1
        if self.cfg.target_update == "soft":
            with torch.no_grad():
                for t, p in zip(self.target.parameters(), self.q.parameters()):
                    t.lerp_(p, self.cfg.tau)
        elif self.grad_steps % self.cfg.target_update_every == 0:
            self.target.load_state_dict(self.q.state_dict())
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"q": self.q.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "grad_steps": self.grad_steps,
                "feature_mean": self.feature_mean, "feature_std": self.feature_std}

    def load_state_dict(self, state: dict) -> None:
        self.q.load_state_dict(state["q"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.grad_steps = state["grad_steps"]
        self.feature_mean = state["feature_mean"].to(self.device)
        self.feature_std = state["feature_std"].to(self.device)
