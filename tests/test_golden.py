"""The same seed writes the same CSV before and after a change of the code's structure.

Each case is a small run of one algorithm family (online value-based with the embedded LLM
prior and with an expert mix, prior-only, offline CQL, policy-based GFlan); its CSV, without
the wall-time and cache-split columns, is compared with the one recorded in ``tests/golden/``.
A change that alters any number, decision or column fails here. When a change is meant to alter
results, re-record with ``LLMRL_RECORD_GOLDEN=1 pytest tests/test_golden.py`` and say why in the
commit message. The recordings were made with torch 2.13 on CPU.
"""

import os
from pathlib import Path

import pandas as pd
import pytest

from llmrl_cli.algos import make_loop
from llmrl_cli.config import build_config

GOLDEN = Path(__file__).parent / "golden"
#: wall times and the encoder cache's hit/miss split (rebuilt, not checkpointed, on resume)
TIMING = ["wall_s", "prior_seconds", "encoder_seconds", "update_seconds", "encoder_hits"]

CASES = {
    "online-local": dict(env="frozenlake", algo="dqn-prior", prior="local", k=3, episodes=4,
                         env_kwargs={"horizon": 5},
                         agent={"eval_every": 2, "eval_episodes": 1}),
    "online-expert-mix": dict(env="overcooked-tomato", algo="dqn-prior",
                              prior="expert-mix:0.5", episodes=10,
                              agent={"eval_every": 5, "eval_episodes": 2}),
    "online-baseline": dict(env="overcooked-tomato", algo="dqn", episodes=10,
                            agent={"eval_every": 5, "eval_episodes": 2}),
    "prior-only": dict(env="frozenlake", algo="llm", prior="local", k=3, episodes=2,
                       env_kwargs={"horizon": 5},
                       agent={"eval_every": 1, "eval_episodes": 1}),
    "offline": dict(env="overcooked-tomato", algo="cql-prior", prior="expert-mix:0.5",
                    max_transitions=200,
                    agent={"grad_steps": 60, "eval_every_steps": 30, "eval_episodes": 2}),
    "policy": dict(env="frozenlake", algo="gflan-prior", episodes=2,
                   env_kwargs={"horizon": 4},
                   agent={"eval_every": 1, "eval_episodes": 1, "rollout_steps": 4,
                          "epochs": 1, "minibatch_size": 4}),
}


def _run(cfg):
    return make_loop(cfg, log=lambda *_: None).run()


#: the cases that run the embedded LLM take minutes on CPU: `make test-slow` runs them
SLOW = {"online-local", "prior-only", "policy"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in sorted(CASES)])
def test_same_seed_writes_the_recorded_csv(case, tmp_path):
    cfg = build_config(seed=0, device="cpu", out=str(tmp_path / "results"), **CASES[case])
    table = pd.read_csv(_run(cfg)).drop(columns=TIMING)
    golden = GOLDEN / f"{case}.csv"
    if os.environ.get("LLMRL_RECORD_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        table.to_csv(golden, index=False)
    recorded = pd.read_csv(golden)
    assert len(recorded) >= 2
    pd.testing.assert_frame_equal(table, recorded, check_exact=False, rtol=1e-9, atol=1e-12)
