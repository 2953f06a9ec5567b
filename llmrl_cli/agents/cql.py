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

from ..settings import setting
from .dqn import EXPLORATIONS, DQNAgent, DQNConfig


@dataclass
class CQLConfig(DQNConfig):
    """CQL settings: the paper's command (module docstring) over DQNConfig's."""

    batch_size: int = setting(128, "transitions per gradient step", unit="transitions",
                              paper="128", low=1)
    cql_coef: float = setting(5.0, "c, the conservative term's weight", paper="5.0", low=0)
    td_reduction: str = setting("sum", "the squared TD error over the batch: sum or mean",
                                paper="sum (the script's argparse default: mean)",
                                choices=("sum", "mean"))
    grad_steps: int = setting(10_000, "gradient steps in all", unit="gradient steps",
                              paper="10000", low=1)
    eval_every_steps: int = setting(500, "gradient steps between evaluations",
                                    unit="gradient steps", paper="500", low=1)
    eval_policy: str = setting("greedy", "evaluation's acting rule", paper="greedy",
                               choices=EXPLORATIONS)
    dataset_prompt_history: int = setting(
        0, "history lines in the prior's prompts for dataset states", unit="lines",
        paper="0 (CQL_overcook_salad.py:345)", low=0)
    dataset_max_new_tokens: int = setting(
        20, "new tokens per proposal for dataset states (evaluation keeps the run's "
        "max_new_tokens)", unit="tokens", paper="20 (CQL_overcook_salad.py:636)", low=1)
    q_text_task: str = setting(
        "", "the task the Q input names, \"{task},  Action: {a}, for Observation: {s},\"; "
        "\"\" = the env's own Q input", paper="\"3\" on Salad (CQL_overcook_salad.py:264, 548, "
        "584; the Salad preset sets it)")


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
