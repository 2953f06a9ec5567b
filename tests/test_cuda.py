"""The CUDA path, on a GPU: `make test-cuda` (marked `cuda`; `make test` and CI, which have no
GPU, leave these out). Without a CUDA device they fail, not skip."""

import pytest
import torch

from test_prior_local import (
    _queries,
    assert_samples_equal_a_plain_token_by_token_decode,
    assert_scores_equal_a_plain_forward_of_prompt_and_action,
)

from llmrl_cli.priors.local import LocalLLMPrior

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def smol_fp32():
    if not torch.cuda.is_available():
        pytest.fail("no CUDA device: the tests marked cuda need a GPU")
    prior = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6, device="cuda", dtype="float32")
    prior._load()
    return prior


def test_cuda_samples_equal_a_plain_token_by_token_decode(smol_fp32):
    """On CUDA the prompts prefill as one padded batch (no prefix cache); the tree decode
    on top must still draw what a plain decode draws (fp32, so the draws are comparable)."""
    assert smol_fp32._prefix is None
    assert_samples_equal_a_plain_token_by_token_decode(smol_fp32)


def test_cuda_scores_equal_a_plain_forward(smol_fp32):
    assert_scores_equal_a_plain_forward_of_prompt_and_action(smol_fp32)


def test_cuda_prior_runs_bf16_by_default_and_proposes_admissible_actions():
    prior = LocalLLMPrior(seed=0, cache=None, device="cuda")
    prior._load()
    assert prior._lm.dtype == torch.bfloat16 and prior._lm.device.type == "cuda"
    queries = _queries(3)
    proposals = prior.propose(queries, 5)
    assert all(len(p) == 5 and all(a in q.actions for a in p)
               for q, p in zip(queries, proposals))


def test_a_dqn_prior_run_trains_on_the_gpu(tmp_path):
    from llmrl_cli.config import build_config
    from llmrl_cli.runner import Runner

    cfg = build_config(env="frozenlake", algo="dqn-prior", episodes=4, num_envs=4,
                       device="cuda", out=str(tmp_path), experiment="cuda",
                       agent={"train_start": 0, "train_every": 4, "batch_size": 8, "eval_every": 4,
                              "eval_episodes": 4})
    runner = Runner(cfg, log=lambda msg: None)
    runner.run()
    assert runner.agent.grad_steps > 0
    assert next(runner.agent.q.parameters()).device.type == "cuda"
    assert runner.encoder.device.type == "cuda"
    assert runner.prior._lm.device.type == "cuda" and runner.prior._lm.dtype == torch.bfloat16
    rows = runner.csv_path.read_text().splitlines()
    assert len(rows) >= 3  # header, evaluations at 0 and 4
