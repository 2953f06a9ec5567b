"""CQL and CQL-Prior (offline; Yan et al., ICLR 2025, Sec. 4.2): conservative Q-learning over a
candidate set C(s), on a fixed dataset of transitions (s, a, r, s', done).

    y_i  = r_i + gamma * (1 - done_i) * max_{a' in C(s'_i)} Q_target(s'_i, a')
    loss = 0.5 * sum_i ( Q(s_i, a_i) - y_i )^2
         + c * mean_i [ logsumexp_{a in C(s_i)} Q(s_i, a) - Q(s_i, a_i) ]

C is every admissible action for ``cql`` and the k LLM proposals for ``cql-prior`` (so the
conservative push-down and the bootstrap max only range over what the prior proposes). The
data action a_i enters the logsumexp only if it is in C(s_i), as in the reference code.
Paper settings: c = 5.0, 10,000 gradient steps, batch 128, soft target tau 0.005, eval every
500 steps. The squared TD error is summed over the batch, as in the reference code's online
DQN; ``td_reduction: mean`` gives its CQL script's default (``mse_type='mean'``). With the
paper's c = 5, the mean made Q climb without bound on Overcooked Salad (the CQL term holds
Q(s, a_data) about c (1 - p_data) above its target and bootstrapping compounds it), while the
sum gives c a weight per sample (5 / batch 128) of the order of that script's own default
(c = 0.1 with the mean). Measured on Salad: README, "Where we differ".
As in that script, evaluation is greedy (its ``evaluate_q`` plays argmax Q) and the prior is
asked about dataset states without history (``dataset_prompt_history: 0``; online prompts
carry the last 3 steps). ``reference_td_broadcast`` (DQNConfig) reproduces its TD target's
batch broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .dqn import DQNAgent, DQNConfig


@dataclass
class CQLConfig(DQNConfig):
    batch_size: int = 128
    cql_coef: float = 5.0
    td_reduction: str = "sum"
    grad_steps: int = 10_000
    eval_every_steps: int = 500
    eval_policy: str = "greedy"
    # history lines in the prior's prompts for dataset states (the reference script: none)
    dataset_prompt_history: int = 0

    def validate(self) -> None:
        super().validate()
        if self.td_reduction not in ("mean", "sum"):
            raise ValueError("td_reduction must be mean or sum")
        if self.cql_coef < 0 or self.grad_steps < 1 or self.eval_every_steps < 1:
            raise ValueError("cql_coef must be >= 0, grad_steps and eval_every_steps >= 1")
        if self.dataset_prompt_history < 0:
            raise ValueError("dataset_prompt_history must be >= 0")


class CQLAgent(DQNAgent):
    """A DQN agent whose loss adds the conservative term over C(s) (module docstring).

    Batches carry, besides the DQN fields, ``cand_features [B, n, dim]`` and ``cand_mask
    [B, n]``: the candidates C(s) at the dataset state (padding masked out).
    """

    cfg: CQLConfig

    def conservative_gap(self, batch: dict[str, torch.Tensor], q_data: torch.Tensor) -> torch.Tensor:
        """logsumexp_{a in C(s)} Q(s, a) - Q(s, a_data), per transition."""
        q_cands = self.q(self.inputs(batch["cand_features"]))
        q_cands = q_cands.masked_fill(~batch["cand_mask"], -torch.inf)
        return torch.logsumexp(q_cands, dim=1) - q_data

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        q_data = self.q(self.inputs(batch["features"]))
        td = self.td_error(q_data, batch, self.cfg.td_reduction)
        return 0.5 * td + self.cfg.cql_coef * self.conservative_gap(batch, q_data).mean()
