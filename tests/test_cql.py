"""The CQL loss on a tiny hand-computed batch, and CQL-Prior's restriction to the proposals."""

import math

import pytest
import torch

from llmrl_cli.agents.cql import CQLAgent, CQLConfig


def _read_first_feature(net):
    """Make a Q-head compute Q(x) = x[0] (for x[0] >= 0)."""
    with torch.no_grad():
        for layer in net.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        net.net[0].weight[0, 0] = 1.0
        net.net[2].weight[0, 0] = 1.0
        net.net[4].weight[0, 0] = 1.0


def _agent(**kw):
    torch.manual_seed(0)
    agent = CQLAgent(2, CQLConfig(**kw), torch.device("cpu"))
    _read_first_feature(agent.q)
    _read_first_feature(agent.target)
    return agent


def _f(*values):
    return torch.tensor([[v, 0.0] for v in values])


BATCH = {
    # Q(s, a_data) = 1 and 2
    "features": _f(1.0, 2.0),
    # C(s): row 0 {1, 3}, row 1 {2, 0.5 (padding, ignored)}
    "cand_features": torch.stack([_f(1.0, 3.0), _f(2.0, 0.5)]),
    "cand_mask": torch.tensor([[True, True], [True, False]]),
    # C(s'): row 0 {4, 2}; row 1 terminal
    "next_features": torch.stack([_f(4.0, 2.0), _f(0.0, 0.0)]),
    "next_mask": torch.tensor([[True, True], [False, False]]),
    "reward": torch.tensor([0.5, 1.0]),
    "done": torch.tensor([0.0, 1.0]),
}


def test_cql_loss_by_hand():
    agent = _agent(gamma=0.5, cql_coef=2.0)
    # targets: 0.5 + 0.5 * max(4, 2) = 2.5 and 1.0 (terminal); errors 1.5 and 1.0
    mse = (1.5**2 + 1.0**2) / 2
    gap0 = math.log(math.exp(1.0) + math.exp(3.0)) - 1.0
    gap1 = math.log(math.exp(2.0)) - 2.0  # the padded 0.5 does not count
    # the default sums the squared TD errors; the CQL gap is a batch mean either way
    assert agent.loss(BATCH).item() == pytest.approx(0.5 * 2 * mse + (gap0 + gap1), rel=1e-6)
    mean = _agent(gamma=0.5, cql_coef=2.0, td_reduction="mean")
    assert mean.loss(BATCH).item() == pytest.approx(0.5 * mse + 2.0 * (gap0 + gap1) / 2, rel=1e-6)


def test_cql_prior_restricts_logsumexp_to_the_proposals():
    agent = _agent(cql_coef=1.0)
    # the same state, all 4 admissible actions vs. the 2 proposed ones
    everything = {**BATCH, "cand_features": torch.stack([_f(1.0, 3.0, 6.0, 0.2)] * 2),
                  "cand_mask": torch.ones(2, 4, dtype=torch.bool)}
    proposals = {**everything, "cand_mask": torch.tensor([[True, True, False, False]] * 2)}
    q_data = torch.tensor([1.0, 2.0])
    assert agent.conservative_gap(everything, q_data).tolist() == pytest.approx(
        [math.log(sum(math.exp(v) for v in (1, 3, 6, 0.2))) - q for q in (1.0, 2.0)])
    assert agent.conservative_gap(proposals, q_data).tolist() == pytest.approx(
        [math.log(math.exp(1) + math.exp(3)) - q for q in (1.0, 2.0)])


def test_a_cql_step_lowers_unseen_actions_relative_to_data():
    torch.manual_seed(0)
    agent = CQLAgent(2, CQLConfig(cql_coef=5.0, lr=1e-2), torch.device("cpu"))
    batch = {**BATCH, "features": _f(1.0, 2.0) + torch.tensor([0.0, 1.0]),
             "cand_features": torch.stack([_f(1.0, 3.0), _f(2.0, 0.5)]) + torch.tensor([0.0, -1.0])}
    before = float(agent.conservative_gap(batch, agent.q(batch["features"])).mean())
    for _ in range(20):
        agent.update(batch)
    after = float(agent.conservative_gap(batch, agent.q(batch["features"])).mean())
    assert after < before
