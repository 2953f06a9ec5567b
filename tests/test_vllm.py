"""The served prior against a real vLLM server (`make test-vllm` starts one on the CPU).

The server runs the exported embedded SmolLM2 in float32, so its scores must match the local
backend's on the same prompts."""

import os

import pandas as pd
import pytest

from llmrl_cli.config import build_config
from llmrl_cli.errors import UserError
from llmrl_cli.priors.cache import ProposalCache
from llmrl_cli.priors.local import LocalLLMPrior
from llmrl_cli.priors.probe import probe_states
from llmrl_cli.priors.vllm import VLLMPrior
from llmrl_cli.runner import Runner

pytestmark = pytest.mark.vllm
MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def url():
    url = os.environ.get("LLMRL_TEST_VLLM_URL")
    if not url:
        pytest.fail("LLMRL_TEST_VLLM_URL is not set: run these tests with `make test-vllm`")
    return url


@pytest.fixture(scope="module")
def states():
    return probe_states("frozenlake", 6, seed=0)


def test_a_server_serving_another_model_is_refused(url):
    with pytest.raises(UserError, match=f"serves {MODEL}, not 'Qwen1.5-7B'"):
        VLLMPrior(url=url, model="Qwen1.5-7B").check()


def test_score_mode_matches_the_local_model(url, states):
    served = VLLMPrior(url=url, model=MODEL, mode="score", cache=ProposalCache(None))
    local = LocalLLMPrior(mode="score", dtype="float32", cache=ProposalCache(None))
    remote_p, local_p = served.distribution(states, 5), local.distribution(states, 5)
    assert served.requests == 1  # all states x candidates in one request
    for r, l in zip(remote_p, local_p):
        assert r == pytest.approx(l, abs=1e-3)
        assert l[r.index(max(r))] == pytest.approx(max(l), abs=1e-3)  # same top action


def test_sample_mode_gives_k_admissible_proposals_in_one_request(url, states):
    served = VLLMPrior(url=url, model=MODEL, mode="sample", cache=ProposalCache(None))
    proposals = served.propose(states, 5)
    assert served.requests == 1
    assert [len(p) for p in proposals] == [5] * len(states)
    assert all(a in q.actions for q, row in zip(states, proposals) for a in row)
    assert served.stats.tokens > 0 and served.stats.model_queries == len(states)
    assert served.propose(states, 5) == proposals and served.requests == 1  # cached


@pytest.mark.parametrize("mode", ["sample", "score"])
def test_dqn_prior_trains_against_the_server(url, tmp_path, mode):
    cfg = build_config(env="frozenlake", algo="dqn-prior", prior="vllm", prior_url=url,
                       prior_mode=mode, episodes=6, seed=0, out=str(tmp_path), device="cpu",
                       agent={"eval_every": 3, "eval_episodes": 2})
    runner = Runner(cfg, log=lambda *_: None)
    df = pd.read_csv(runner.run())
    assert list(df.episode) == [0, 3, 6]
    assert (df.prior == "vllm").all()
    assert df.llm_calls.iloc[-1] > 0 and df.llm_tokens.iloc[-1] > 0
    assert df.eval_success.between(0, 1).all()


def test_gflan_prior_takes_its_kl_prior_from_the_server(url, tmp_path):
    """kl_prior vllm: the KL's p_LLM from the served model (the embedded one, so the same
    probabilities as the policy's own base model with its adapters off)."""
    import torch

    from llmrl_cli.gflan import GFlanRunner
    from llmrl_cli.training.steps import StepState

    def runner(agent):
        cfg = build_config(env="frozenlake", algo="gflan-prior", seed=0, device="cpu",
                           out=str(tmp_path), agent=agent)
        built = GFlanRunner(cfg, log=lambda *_: None)
        built.build()
        return built

    served = runner({"kl_prior": "vllm", "kl_prior_url": url, "kl_prior_model": MODEL})
    base = runner({})
    slot = base.slots[0]
    base._new_episode(slot)
    states = [StepState(slot.obs, [], (), base.context(slot.env))]
    theirs = served.policy_decisions(states, with_prior=True)[0].prior_logp
    ours = base.policy_decisions(states, with_prior=True)[0].prior_logp
    assert torch.allclose(theirs.exp(), ours.exp(), atol=1e-3), (theirs, ours)
