"""Offline workflow: collecting datasets, and cql / cql-prior runs trained on them."""

import pandas as pd
import pytest

from llmrl_cli.cli import main
from llmrl_cli.config import ENV_PRESETS, build_config
from llmrl_cli.data.collect import collect
from llmrl_cli.data.dataset import load_dataset
from llmrl_cli.offline import OfflineRunner, default_dataset_path
from tests.conftest import FIXTURES

PAPER = FIXTURES / "overcooked_lettuce_tomato_paper_dataset.jsonl"


def test_collect_expert_and_balanced_datasets():
    expert = collect("overcooked-tomato", "expert-mix:0", 3, seed=0)
    assert [len(e) for e in expert.episodes()] == [6, 6, 6]  # the shortest plan, every time
    assert expert.successful_episodes() == 3
    mixed = collect("overcooked-tomato", "expert-mix:0.5", 8, seed=0, success_share=0.75)
    assert len(mixed.episodes()) == 8 and mixed.successful_episodes() == 6
    assert mixed == collect("overcooked-tomato", "expert-mix:0.5", 8, seed=0, success_share=0.75)
    lake = collect("frozenlake", "random", 5, seed=1, horizon=20)
    assert len(lake.episodes()) == 5 and all(len(e) <= 20 for e in lake.episodes())


def _cfg(tmp_path, **kw):
    agent = {"grad_steps": 100, "eval_every_steps": 50, "eval_episodes": 2,
             **kw.pop("agent", {})}
    return build_config(env=kw.pop("env", "overcooked-tomato"), algo=kw.pop("algo", "cql"),
                        seed=0, out=str(tmp_path / "results"), device="cpu", agent=agent, **kw)


def test_cql_run_collects_its_dataset_once_and_writes_eval_rows(tmp_path):
    cfg = _cfg(tmp_path, max_transitions=300)
    df = pd.read_csv(OfflineRunner(cfg, log=lambda *_: None).run())
    assert list(df.episode) == [0, 50, 100] and list(df.grad_steps) == [0, 50, 100]
    assert (df.env_steps == 300).all() and (df.prior == "uniform").all()
    data = load_dataset(default_dataset_path(cfg.out, cfg.env, 0))
    assert len(data.episodes()) == 133 and data.successful_episodes() == 100
    # extending the budget continues from the checkpoint and matches a straight run
    longer = _cfg(tmp_path, max_transitions=300, agent={"grad_steps": 150})
    extended = pd.read_csv(OfflineRunner(longer, log=lambda *_: None).run())
    straight_cfg = _cfg(tmp_path, max_transitions=300, agent={"grad_steps": 150},
                        experiment="straight")
    straight = pd.read_csv(OfflineRunner(straight_cfg, log=lambda *_: None).run())
    timing = ["wall_s", "prior_seconds", "encoder_seconds", "update_seconds", "encoder_hits",
              "encoder_texts"]
    pd.testing.assert_frame_equal(extended.drop(columns=timing), straight.drop(columns=timing))


@pytest.mark.skipif(not PAPER.exists(), reason=f"fixtures folder {FIXTURES} is absent")
def test_cql_prior_on_the_paper_dataset_with_an_expert_mix_prior(tmp_path):
    cfg = _cfg(tmp_path, env="overcooked-salad", algo="cql-prior", prior="expert-mix:0.5",
               dataset=str(PAPER), max_transitions=200)
    runner = OfflineRunner(cfg, log=lambda *_: None)
    df = pd.read_csv(runner.run())
    assert (df.env_steps == 200).all() and (df.prior == "expert-mix:0.5").all()
    # the paper's episodes replay in our env, so every dataset state got the expert's actions
    assert runner.optimal_seen >= 200 and df.prior_optimal_rate.iloc[-1] > 0.5


@pytest.mark.skipif(not PAPER.exists(), reason=f"fixtures folder {FIXTURES} is absent")
def test_dataset_prompts_have_no_history_unless_asked(tmp_path):
    """As the reference CQL script: proposals for dataset states come from history-free prompts
    (its get_thought_actions(..., history=''))."""
    data = load_dataset(PAPER)
    first = data.episodes()[0]
    prompts = {}
    for lines in (0, 3):
        cfg = _cfg(tmp_path, env="overcooked-salad", algo="cql-prior", prior="expert-mix:0.5",
                   agent={"dataset_prompt_history": lines})
        runner = OfflineRunner(cfg, log=lambda *_: None)
        runner._build()
        runner.check_expert()
        queries, *_ = runner._queries(data)
        prompts[lines] = [q.prompt for q in queries[: len(first)]]

    def history(prompt):
        return prompt.split("History:\n", 1)[1].split("Current Observation:", 1)[0]

    assert all(history(p) == "\n" for p in prompts[0])
    # with 3 lines the previous steps' observations and actions are in the prompt
    step = "Observation: {0.obs_text}. Action: {0.action}.\n"
    assert history(prompts[3][2]) == step.format(first[0]) + step.format(first[1])
    assert prompts[0][0] == prompts[3][0]  # the first step has no history either way


@pytest.mark.parametrize("env", ["overcooked-salad", "overcooked-tomato", "alfworld-pick",
                                 "frozenlake"])
def test_env_presets_do_not_override_cql_defaults(env):
    """An env preset's online DQN schedule stays with dqn; cql keeps the paper's CQL settings
    (batch 128, soft targets, greedy evaluation) and takes only the env's evaluation size and
    feature standardisation."""
    preset = ENV_PRESETS[env]["agent"]
    for algo, prior in (("cql", None), ("cql-prior", "expert-mix:0.5")):
        agent = build_config(env=env, algo=algo, prior=prior).agent
        assert (agent.batch_size, agent.target_update, agent.tau) == (128, "soft", 0.005)
        assert (agent.eval_policy, agent.exploration, agent.train_start) == ("greedy", "softmax", 0)
        assert agent.eval_episodes == preset["eval_episodes"]
        assert agent.feature_norm is True
    # the same preset still shapes the online baseline
    dqn = build_config(env=env, algo="dqn").agent
    assert dqn.batch_size == preset.get("batch_size", 64)
    assert dqn.eval_policy == preset["eval_policy"]
    # a YAML or flag still sets any CQL setting
    assert build_config(env=env, algo="cql", agent={"batch_size": 32}).agent.batch_size == 32


@pytest.mark.parametrize("args, message", [
    (("run", "--algo", "dqn", "--dataset", "x.jsonl"),
     "--dataset and --max-transitions are for offline algos (cql, cql-prior)"),
    (("run", "--algo", "cql", "--prior", "local"),
     "--algo cql learns over all admissible actions and takes no prior"),
    (("run", "--algo", "cql", "--dataset", "/no/file.jsonl", "--env", "overcooked-tomato"),
     "dataset '/no/file.jsonl' does not exist"),
    (("collect", "--env", "frozenlake", "--policy", "greedy", "--out", "d.jsonl"),
     "unknown policy 'greedy'; choose one of: random, expert-mix:EPS"),
])
def test_offline_input_errors(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and message in err and "Traceback" not in err
