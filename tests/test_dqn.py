import torch

from llmrl_cli.agents.dqn import DQNAgent, DQNConfig, choose


def _agent(**kw):
    torch.manual_seed(0)
    return DQNAgent(3, DQNConfig(**kw), torch.device("cpu"))


def test_td_target_is_max_over_valid_candidates_only():
    agent = _agent(gamma=0.5)
    # target Q(x) = x[0]: make the head read the first feature exactly
    with torch.no_grad():
        for layer in agent.target.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        agent.target.net[0].weight[0, 0] = 1.0
        agent.target.net[2].weight[0, 0] = 1.0
        agent.target.net[4].weight[0, 0] = 1.0
    next_features = torch.tensor([[[2.0, 0, 0], [5.0, 0, 0], [9.0, 0, 0]],
                                  [[4.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]],
                                  [[7.0, 0, 0], [0.0, 0, 0], [0.0, 0, 0]]])
    batch = {
        "features": torch.zeros(3, 3),
        "next_features": next_features,
        # row 0: the 9.0 candidate is padding and must be ignored; row 2: terminal
        "next_mask": torch.tensor([[True, True, False], [True, True, True], [True, False, False]]),
        "reward": torch.tensor([1.0, 0.0, 3.0]),
        "done": torch.tensor([0.0, 0.0, 1.0]),
    }
    assert torch.allclose(agent.td_target(batch), torch.tensor([1 + 0.5 * 5, 0.5 * 4, 3.0]))


def test_td_loss_is_summed_squared_error():
    agent = _agent()
    batch = {
        "features": torch.randn(4, 3),
        "next_features": torch.randn(4, 2, 3),
        "next_mask": torch.ones(4, 2, dtype=torch.bool),
        "reward": torch.randn(4),
        "done": torch.zeros(4),
    }
    q = agent.q(batch["features"])
    expected = ((q - agent.td_target(batch)) ** 2).sum()
    assert torch.allclose(agent.td_loss(batch), expected)


def test_update_moves_target_softly():
    agent = _agent(tau=0.5, lr=0.1)
    before = [p.clone() for p in agent.target.parameters()]
    batch = {"features": torch.randn(8, 3), "next_features": torch.randn(8, 2, 3),
             "next_mask": torch.ones(8, 2, dtype=torch.bool), "reward": torch.ones(8),
             "done": torch.zeros(8)}
    agent.update(batch)
    for t, b, q in zip(agent.target.parameters(), before, agent.q.parameters()):
        assert torch.allclose(t, 0.5 * b + 0.5 * q)


def test_softmax_choice_counts_duplicate_proposals():
    # Proposition 1: equal Q, candidates [a, a, b] -> a is drawn 2/3 of the time
    cfg = DQNConfig(alpha=0.1)
    rng = torch.Generator().manual_seed(0)
    q = torch.zeros(3)
    draws = [choose(q, "softmax", cfg, rng) for _ in range(3000)]
    share_a = sum(d in (0, 1) for d in draws) / len(draws)
    assert abs(share_a - 2 / 3) < 0.03


def test_softmax_temperature_and_greedy_and_eps():
    cfg = DQNConfig(alpha=0.1, epsilon=0.0)
    rng = torch.Generator().manual_seed(1)
    q = torch.tensor([0.0, 0.5])  # softmax(q/0.1): p(1) = 1/(1+e^-5) = 0.9933
    draws = [choose(q, "softmax", cfg, rng) for _ in range(2000)]
    assert 0.985 < sum(draws) / len(draws) <= 1.0
    assert choose(q, "greedy", cfg, rng) == 1
    assert all(choose(q, "eps-greedy", cfg, rng) == 1 for _ in range(50))


def test_feature_normaliser_standardises():
    agent = _agent(feature_norm=True)
    feats = torch.tensor([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]])
    agent.fit_normaliser(feats)
    z = agent.inputs(feats)
    assert torch.allclose(z[:, :2], torch.tensor([[-0.7071, -0.7071], [0.7071, 0.7071]]), atol=1e-4)
    assert torch.all(torch.isfinite(z))  # constant dimension: std clamped, no division by 0
