"""CQL and CQL-Prior (offline; Yan et al., ICLR 2025, Sec. 4.2): conservative Q-learning over a
candidate set C(s), on a fixed dataset of transitions (s, a, r, s', done).

    y_i  = r_i + gamma * (1 - done_i) * max_{a' in C(s'_i)} Q_target(s'_i, a')
    loss = 0.5 * sum_i ( Q(s_i, a_i) - y_i )^2
         + c * mean_i [ logsumexp_{a in C(s_i)} Q(s_i, a) - Q(s_i, a_i) ]

C is every admissible action for ``cql`` and the k LLM proposals for ``cql-prior`` (so the
conservative push-down and the bootstrap max only range over what the prior proposes). The
data action a_i enters the logsumexp only if it is in C(s_i), as in the paper's code
(value-based/CQL_overcook_salad.py:726-744: the concatenation with a_data is unused).
Paper settings (readme l.55: ``--cql_coef 5.0 --gamma 0.99 --mse_type sum --batch 128
--train_iter 10000``): c = 5.0, the squared TD error summed over the batch, 10,000 gradient
steps, batch 128, soft target tau 0.005, an evaluation every 500 steps (``training_iter // 20``,
l.766) of 10 greedy episodes (its ``evaluate_q`` plays argmax Q, l.443). ``td_reduction: mean``
gives that script's argparse default (``mse_type='mean'``, l.523), which the paper's command
does not use. The prior is asked about dataset states without history (l.345, 365;
``dataset_prompt_history: 0``) and, in evaluation, with the last 5 steps (``hislen``, l.27).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .dqn import DQNAgent, DQNConfig


@dataclass
class CQLConfig(DQNConfig):
    """CQL settings (module docstring). ``dataset_max_new_tokens``: the prior's proposals for
    dataset states are generated with at most this many new tokens, as the paper's script's
    dataset generator (value-based/CQL_overcook_salad.py:636, ``max_new_tokens=20``); online
    evaluation keeps the run's own ``max_new_tokens``."""

    batch_size: int = 128
    cql_coef: float = 5.0
    td_reduction: str = "sum"
    grad_steps: int = 10_000
    eval_every_steps: int = 500
    eval_policy: str = "greedy"
    # history lines in the prior's prompts for dataset states (the paper's script: none,
    # CQL_overcook_salad.py:345)
    dataset_prompt_history: int = 0
    # new tokens per proposal for dataset states (CQL_overcook_salad.py:636: 20)
    dataset_max_new_tokens: int = 20
    # the task the Q input names: "{task},  Action: {a}, for Observation: {s},"; the paper's
    # script passes its --task index, 3 (CQL_overcook_salad.py:264, 548, 584; the Salad
    # preset sets it); "" = the env's own (Overcooked: "Observation: {s},  Action: {a}.")
    q_text_task: str = ""

    def validate(self) -> None:
        super().validate()
        if self.td_reduction not in ("mean", "sum"):
            raise ValueError("td_reduction must be mean or sum")
        if self.cql_coef < 0 or self.grad_steps < 1 or self.eval_every_steps < 1:
            raise ValueError("cql_coef must be >= 0, grad_steps and eval_every_steps >= 1")
        if self.dataset_prompt_history < 0:
            raise ValueError("dataset_prompt_history must be >= 0")
        if self.dataset_max_new_tokens < 1:
            raise ValueError("dataset_max_new_tokens must be >= 1")


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
