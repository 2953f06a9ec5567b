"""The same seed writes the same CSV before and after a change of the code's structure.

Each case is a small run of one algorithm family (online value-based with the embedded LLM
prior and with an expert mix, prior-only, offline CQL, policy-based GFlan); its CSV, without
the wall-time and cache-split columns, is compared with the one recorded in ``tests/golden/``.
A change that alters any number, decision or column fails here. When a change is meant to alter
results, re-record with ``LLMRL_RECORD_GOLDEN=1 pytest tests/test_golden.py`` and say why in the
commit message. The recordings were made with torch 2.13 on CPU.

Float32 kernels differ between CPUs (MKL and ATen pick AVX2, AVX-512 or AMX code by the CPU),
so the same seed gives results that differ in the last bits on another machine, and then in a
decision at the first near tie. Each case therefore runs in its own process with
``PORTABLE_NUMERICS`` (the Makefile's, which ``make check-reference`` uses too): MKL's
conditional numerical reproducibility, ATen's generic kernels, oneDNN's AVX2 kernels and one
thread, which give the same numbers on any x86-64 CPU with AVX2 (checked on one machine by
switching MKL's instruction set between SSE4.2, AVX2 and AVX-512). Across CPU vendors they do
not quite: the recordings (an Intel Xeon) and a run on an AMD EPYC differ by up to 9e-7 relative
in the loss column, with every decision the same. So numbers are compared to 1e-4 relative
(1e-6 absolute near zero); a changed decision, step count or loss formula is far outside that.
"""

import os
import subprocess
import sys
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


#: environment under which CPU float32 results do not depend on the CPU model
PORTABLE_NUMERICS = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default",
                     "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1"}


def _run(case: str, out: Path) -> Path:
    """Run ``case`` with seed 0 in a fresh process under PORTABLE_NUMERICS; the CSV's path."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from test_golden import CASES, run_in_this_process\n"
        "print(run_in_this_process(sys.argv[2], sys.argv[3]))\n")
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), case, str(out)],
        env={**os.environ, **PORTABLE_NUMERICS}, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def run_in_this_process(case: str, out: str) -> Path:
    cfg = build_config(seed=0, device="cpu", out=out, **CASES[case])
    return make_loop(cfg, log=lambda *_: None).run()


#: the cases that run the embedded LLM take minutes on CPU: `make test-slow` runs them
SLOW = {"online-local", "prior-only", "policy"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in sorted(CASES)])
def test_same_seed_writes_the_recorded_csv(case, tmp_path):
    table = pd.read_csv(_run(case, tmp_path / "results")).drop(columns=TIMING)
    golden = GOLDEN / f"{case}.csv"
    if os.environ.get("LLMRL_RECORD_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        table.to_csv(golden, index=False)
    recorded = pd.read_csv(golden)
    assert len(recorded) >= 2
    pd.testing.assert_frame_equal(table, recorded, check_exact=False, rtol=1e-4, atol=1e-6)
