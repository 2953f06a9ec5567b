"""The embedded SmolLM2 prior, run for real (small batches to keep it quick)."""

import pytest

from llmrl_cli.envs import make
from llmrl_cli.priors import PriorQuery, ProposalCache
from llmrl_cli.priors.base import UniformMixPrior, UniformPrior
from llmrl_cli.priors.local import LocalLLMPrior
from llmrl_cli.priors.prompts import build_prompt, history_line


def _queries(n=2):
    env = make("frozenlake")
    obs, _ = env.reset(seed=0)
    out = []
    history = []
    for move in ["down", "down", "right"][:n]:
        out.append(PriorQuery(build_prompt("frozenlake", env.instruction, obs["text"],
                                           obs["actions"], history), tuple(obs["actions"])))
        history.append(history_line(obs["text"], move))
        obs, *_ = env.step(move)
    return out


def test_prompt_follows_the_paper_layout():
    env = make("frozenlake")
    obs, _ = env.reset(seed=0)
    prompt = build_prompt("frozenlake", env.instruction, obs["text"], obs["actions"],
                          [history_line("o1", "up"), history_line("o2", "left"),
                           history_line("o3", "down"), history_line("o4", "right")])
    lines = prompt.split("\n")
    assert lines[0] == env.instruction
    assert lines[1] == "History:"
    assert lines[2:5] == ["Observation: o2. Action: left.", "Observation: o3. Action: down.",
                          "Observation: o4. Action: right."]  # the last 3 pairs only
    assert lines[5] == f"Current Observation: {obs['text']}"
    assert lines[6].endswith("admissible actions: ['left', 'down', 'right', 'up']. Action:")


@pytest.fixture(scope="module")
def smol():
    prior = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6)
    prior._load()
    return prior


def test_sample_mode_returns_k_admissible_proposals(smol):
    queries = _queries(2)
    proposals = smol.propose(queries, 5)
    assert [len(p) for p in proposals] == [5, 5]
    assert all(a in q.actions for q, p in zip(queries, proposals) for a in p)
    raw = smol.completions(queries, 5)
    assert all("\n" not in text for row in raw for text in row)


def test_proposals_are_a_function_of_prompt_and_seed(smol, tmp_path):
    queries = _queries(1)
    first = smol.completions(queries, 4)
    assert smol.completions(queries, 4) == first
    other_seed = LocalLLMPrior(seed=1, cache=None, max_new_tokens=6)
    other_seed._tokenizer, other_seed._lm, other_seed._newline_ids = (
        smol._tokenizer, smol._lm, smol._newline_ids)
    assert other_seed.completions(queries, 4) != first


def test_cache_answers_repeated_prompts_without_the_model(smol, tmp_path):
    smol.cache = ProposalCache(tmp_path / "p.sqlite")
    smol.stats.__init__()
    queries = _queries(2)
    first = smol.propose(queries, 3)
    assert (smol.stats.model_queries, smol.stats.cache_hits) == (2, 0)
    assert smol.propose(queries, 3) == first
    assert (smol.stats.model_queries, smol.stats.cache_hits, smol.stats.queries) == (2, 2, 4)
    # a new process reading the same file answers from it too
    fresh = LocalLLMPrior(seed=0, cache=ProposalCache(tmp_path / "p.sqlite"), max_new_tokens=6)
    assert fresh.propose(queries, 3) == first and fresh._lm is None
    smol.cache = None


def test_uniform_prior_and_uniform_mix():
    queries = _queries(2)
    assert UniformPrior().propose(queries, 5) == [list(q.actions) for q in queries]

    class Always(UniformPrior):
        def propose(self, queries, k):
            return [["up"] * k for _ in queries]

    many = [PriorQuery(f"prompt {i}", ("left", "down", "right", "up")) for i in range(200)]
    full = UniformMixPrior(seed=0, base=Always(), eps=1.0).propose(many, 5)
    share_up = sum(a == "up" for row in full for a in row) / (len(full) * 5)
    assert 0.2 < share_up < 0.3  # uniform over 4 actions: 1/4
    # deterministic per prompt: the same state always gets the same smoothed proposals
    assert UniformMixPrior(seed=0, base=Always(), eps=0.5).propose(many[:3], 5) == \
        UniformMixPrior(seed=0, base=Always(), eps=0.5).propose(many[:3], 5)
    none = UniformMixPrior(seed=0, base=Always(), eps=0.0).propose(queries, 5)
    assert none == [["up"] * 5] * 2
