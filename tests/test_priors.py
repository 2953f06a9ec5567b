"""Prior family logic: expert-mix, uniform mix, orderings for debiased scoring, queries."""

import pytest

from llmrl_cli.envs import make
from llmrl_cli.errors import UserError
from llmrl_cli.priors import parse_expert_mix
from llmrl_cli.priors.cache import ProposalCache
from llmrl_cli.priors.base import ExpertMixPrior, UniformMixPrior, UniformPrior
from llmrl_cli.priors.llm import LLMPrior, orderings
from llmrl_cli.priors.probe import probe_states
from llmrl_cli.priors.prompts import build_prompt, build_query

ACTIONS = ("left", "down", "right", "up")


def _states(n=12):
    return probe_states("frozenlake", n, seed=0)


def test_probe_states_are_distinct_and_carry_the_expert():
    states = _states(12)
    assert len(states) == 12 and len({q.prompt for q in states}) == 12
    env = make("frozenlake")
    obs, _ = env.reset(seed=0)
    first = states[0]
    assert first.actions == ACTIONS and first.optimal == ("down", "right")
    assert first.prompt == build_prompt("frozenlake", env.instruction, obs["text"], ACTIONS)
    assert probe_states("frozenlake", 12, seed=0) == states  # deterministic


def test_query_renders_any_ordering_of_its_actions():
    q = build_query("frozenlake", "Reach the goal.", "You are here.", ACTIONS, ["h1"], ("down",))
    assert q.prompt_for(ACTIONS) == q.prompt
    reordered = q.prompt_for(("up", "left", "down", "right"))
    assert reordered == q.prompt.replace("['left', 'down', 'right', 'up']",
                                         "['up', 'left', 'down', 'right']")
    assert q.expert == "down"


def test_orderings_rotate_then_shuffle():
    assert orderings(ACTIONS, 1, "p") == [ACTIONS]
    assert orderings(ACTIONS, 4, "p") == [
        ("left", "down", "right", "up"), ("down", "right", "up", "left"),
        ("right", "up", "left", "down"), ("up", "left", "down", "right")]
    six = orderings(ACTIONS, 6, "p")
    assert six[:4] == orderings(ACTIONS, 4, "p") and all(sorted(o) == sorted(ACTIONS) for o in six)
    assert six == orderings(ACTIONS, 6, "p")


@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0])
def test_expert_mix_proposes_the_expert_with_probability_one_minus_eps(eps):
    states = _states(12) * 1
    prior = ExpertMixPrior(seed=0, eps=eps)
    proposals = prior.propose(states, 50)
    share = sum(a == q.expert for q, row in zip(states, proposals) for a in row) / (12 * 50)
    expected = (1 - eps) + eps / 4
    assert abs(share - expected) < 0.06
    for q, probs in zip(states, prior.distribution(states, 5)):
        assert probs == pytest.approx([(1 - eps) * (a == q.expert) + eps / 4 for a in q.actions])
    assert prior.propose(states, 5) == ExpertMixPrior(seed=0, eps=eps).propose(states, 5)


def test_uniform_mix_distribution_and_uniform_prior():
    states = _states(3)
    mixed = UniformMixPrior(seed=0, base=ExpertMixPrior(seed=0, eps=0.0), eps=0.2)
    for q, probs in zip(states, mixed.distribution(states, 5)):
        assert probs == pytest.approx([0.8 * (a == q.expert) + 0.05 for a in q.actions])
    assert UniformPrior().distribution(states, 5) == [[0.25] * 4] * 3


@pytest.mark.parametrize("name, eps", [("expert-mix:0.25", 0.25), ("expert-mix:1", 1.0),
                                       ("local", None)])
def test_parse_expert_mix(name, eps):
    assert parse_expert_mix(name) == eps


@pytest.mark.parametrize("name", ["expert-mix", "expert-mix:1.5", "expert-mix:x", "expert-mixy:0"])
def test_bad_expert_mix_names(name):
    with pytest.raises(UserError, match="expert-mix:EPS with EPS in"):
        parse_expert_mix(name)


class TableScores(LLMPrior):
    """Scores from a fixed table: first-listed action +2 nats (a position-biased model)."""

    def _score(self, prompts, candidates):
        out = []
        for prompt, cands in zip(prompts, candidates):
            listed = prompt.split("actions: ")[1]
            first = next(a for a in cands if listed.startswith(f"['{a}'"))
            out.append([2.0 * (a == first) + (1.0 if a == "down" else 0.0) for a in cands])
        return out


def test_score_mode_averages_over_orderings_and_caches_scores():
    states = _states(2)
    biased = TableScores(mode="score", permutations=1)
    one = biased.distribution(states, 5)
    assert one[0].index(max(one[0])) == 0  # the first-listed action wins
    debiased = TableScores(mode="score", permutations=4, cache=ProposalCache(None))
    four = debiased.distribution(states, 5)
    # every action is listed first once: only the "down" preference survives the average
    assert four[0].index(max(four[0])) == 1
    assert sum(four[0]) == pytest.approx(1.0)
    assert debiased.stats.model_queries == 8 and debiased.stats.queries == 8
    debiased.distribution(states, 5)
    assert debiased.stats.model_queries == 8  # second time, from the in-memory cache
    proposals = debiased.propose(states, 7)
    assert [len(p) for p in proposals] == [7, 7] and all(a in ACTIONS for p in proposals for a in p)
