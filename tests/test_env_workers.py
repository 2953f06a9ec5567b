"""Envs stepped in worker processes (``num_env_workers``): the same results as in-process
stepping, errors that read as they do in-process, and workers that end with the run."""

import pandas as pd
import pytest

from llmrl_cli.config import build_config
from llmrl_cli.runner import Runner
from llmrl_cli.training.env_workers import EnvWorkers, step_envs

#: wall times and the encoder cache's hit/miss split differ from run to run
TIMING = ["wall_s", "prior_seconds", "encoder_seconds", "update_seconds", "encoder_hits"]


def _run(tmp_path, workers, **settings):
    cfg = build_config(seed=0, device="cpu", out=str(tmp_path / f"w{workers}"),
                       num_env_workers=workers, **settings)
    runner = Runner(cfg, log=lambda *_: None)
    table = pd.read_csv(runner.run()).drop(columns=TIMING)
    return runner, table


def test_workers_give_the_results_of_in_process_stepping(tmp_path):
    settings = dict(env="overcooked-tomato", algo="dqn-prior", prior="expert-mix:0.5", episodes=8, num_envs=3,
                    agent={"eval_every": 4, "eval_episodes": 3})
    _, alone = _run(tmp_path, 0, **settings)
    runner, pooled = _run(tmp_path, 2, **settings)
    pd.testing.assert_frame_equal(pooled, alone)
    assert alone.env_steps.iloc[-1] > 8 and list(alone.episode) == [0, 4, 8]
    assert runner.env_workers.processes == []  # closed with the run


def test_a_worker_env_raises_what_the_env_raises():
    pool = EnvWorkers("frozenlake", {}, 2)
    try:
        envs = [pool.make() for _ in range(3)]
        assert [e.worker for e in envs] == [0, 1, 0]
        obs, _ = envs[0].reset(seed=0)
        assert obs["actions"] == ["left", "down", "right", "up"]
        assert envs[0].instruction and envs[0].optimal_actions()
        for env in envs[1:]:
            env.reset(seed=1)
        with pytest.raises(ValueError, match="invalid action 'fly'; admissible actions are"):
            step_envs(envs, ["down", "fly", "right"])
        # the pipes stay in step after an error: the next batch step reads its own replies
        results = step_envs(envs, ["down", "down", "down"])
        assert [len(r) for r in results] == [5, 5, 5]
        assert envs[0].action_count == "4"  # any other attribute is asked of the worker
    finally:
        pool.close()
    assert pool.processes == []
