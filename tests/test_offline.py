"""Offline workflow: collecting datasets, and cql / cql-prior runs trained on them."""

from dataclasses import dataclass, field

import pandas as pd
import pytest
import torch

from llmrl_cli.cli import main
from llmrl_cli.config import build_config
from llmrl_cli.envs import env_class
from llmrl_cli.data.collect import collect
from llmrl_cli.data.dataset import load_dataset
from llmrl_cli.data.paper_dataset import paper_dataset_path
from llmrl_cli.offline import OfflineRunner, default_dataset_path
from llmrl_cli.priors.base import UniformMixPrior, UniformPrior
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
    assert (df.dataset == "collected:expert-mix:0.5").all()
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
    assert (df.dataset == PAPER.name).all()  # the user's file: its name
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
        runner.build()
        runner.check_expert()
        queries, _, state_of, _ = runner._queries(data)
        prompts[lines] = [queries[i].prompt for i in state_of[: len(first)]]

    def history(prompt):
        return prompt.split("History:\n", 1)[1].split("Current Observation:", 1)[0]

    assert all(history(p) == "\n" for p in prompts[0])
    # with 3 lines the previous steps' observations and actions are in the prompt
    step = "Observation: {0.obs_text}. Action: {0.action}.\n"
    assert history(prompts[3][2]) == step.format(first[0]) + step.format(first[1])
    assert prompts[0][0] == prompts[3][0]  # the first step has no history either way


def _quiet(cfg) -> OfflineRunner:
    return OfflineRunner(cfg, log=lambda *_: None)


def _tiny(tmp_path, **kw):
    """A short run: one gradient step, an evaluation of one episode before and after it."""
    return _cfg(tmp_path, agent={"grad_steps": 1, "eval_every_steps": 1, "eval_episodes": 1,
                                 **kw.pop("agent", {})}, **kw)


def _import_small_paper_dataset():
    """Stand-in for `llmrl dataset import-paper`: two expert episodes where it writes."""
    data = collect("overcooked-salad", "expert-mix:0", 2, seed=0)
    data.save(paper_dataset_path())
    return data


def test_an_imported_paper_dataset_is_used_on_salad_and_recorded(tmp_path):
    """Without --dataset, an overcooked-salad run trains on the imported paper dataset, and its
    CSV says so; other envs and an explicit --dataset are not affected."""
    paper = _import_small_paper_dataset()
    df = pd.read_csv(_quiet(_tiny(tmp_path, env="overcooked-salad")).run())
    assert (df.dataset == "paper").all() and (df.env_steps == len(paper)).all()
    assert not default_dataset_path(str(tmp_path / "results"), "overcooked-salad", 0).exists()
    tomato = _quiet(_tiny(tmp_path, env="overcooked-tomato"))
    assert len(tomato.load_data()) > len(paper) and tomato.dataset_label == \
        "collected:expert-mix:0.5"
    mine = tmp_path / "mine.jsonl"
    collect("overcooked-salad", "expert-mix:0", 1, seed=1).save(mine)
    own = _quiet(_tiny(tmp_path, env="overcooked-salad", dataset=str(mine)))
    assert len(own.load_data()) < len(paper) and own.dataset_label == "mine.jsonl"


def test_a_resumed_run_keeps_its_dataset_and_old_csvs_gain_the_column(tmp_path):
    """A run started on a collected dataset continues on it after the paper's is imported; a
    CSV and checkpoint from before the dataset column get it on resume."""
    first = _tiny(tmp_path, env="overcooked-salad")
    collected = collect("overcooked-salad", "expert-mix:0", 1, seed=1)  # small: a quick test
    collected.save(default_dataset_path(first.out, first.env, 0))
    csv_path = _quiet(first).run()
    # as llmrl wrote them before it recorded the dataset
    old = pd.read_csv(csv_path).drop(columns="dataset")
    old.to_csv(csv_path, index=False)
    ckpt = first.stem.parent / f"{first.stem.name}.ckpt.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["dataset"]
    torch.save(state, ckpt)
    _import_small_paper_dataset()
    longer = _tiny(tmp_path, env="overcooked-salad", agent={"grad_steps": 2})
    df = pd.read_csv(_quiet(longer).run())
    assert list(df.episode) == [0, 1, 2] and (df.env_steps == len(collected)).all()
    assert (df.dataset == "collected:expert-mix:0.5").all()
    pd.testing.assert_frame_equal(df.drop(columns="dataset").iloc[:2], old)


@dataclass
class _TokenRecorder(UniformPrior):
    """A uniform prior with an LLM prior's ``max_new_tokens`` field, recording its value at
    every ``propose``."""

    max_new_tokens: int = 10
    seen: list = field(default_factory=list)

    def propose(self, queries, k):
        self.seen.append(self.max_new_tokens)
        return super().propose(queries, k)


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("tokens", [None, 7])
def test_dataset_proposals_use_dataset_max_new_tokens(tmp_path, wrapped, tokens):
    """As the reference CQL script's dataset generator (max_new_tokens=20): the dataset's
    proposals get agent.dataset_max_new_tokens, evaluation the run's own value (10) again."""
    agent = {} if tokens is None else {"dataset_max_new_tokens": tokens}
    cfg = _cfg(tmp_path, algo="cql-prior", prior="uniform", agent=agent)
    assert cfg.max_new_tokens == 10 and cfg.agent.dataset_max_new_tokens == (tokens or 20)
    runner = _quiet(cfg)
    runner.build()
    runner.check_expert()
    runner.optimal_hits = runner.optimal_seen = 0
    recorder = _TokenRecorder()
    runner.prior = UniformMixPrior(base=recorder, eps=0.0) if wrapped else recorder
    runner.build_buffer(collect("overcooked-tomato", "expert-mix:0", 2, seed=0))
    assert recorder.seen == [tokens or 20] and recorder.max_new_tokens == 10
    runner.prior.propose([], cfg.k)  # as an online evaluation asks it
    assert recorder.seen[-1] == 10


def test_dataset_max_new_tokens_must_be_positive():
    with pytest.raises(Exception, match="dataset_max_new_tokens must be >= 1"):
        build_config(env="overcooked-salad", algo="cql", agent={"dataset_max_new_tokens": 0})


@pytest.mark.parametrize("env", ["overcooked-salad", "overcooked-tomato", "alfworld-pick",
                                 "frozenlake"])
def test_env_presets_do_not_override_cql_defaults(env):
    """An env preset's online DQN schedule stays with dqn; cql keeps the paper's CQL settings
    (batch 128, soft targets, greedy evaluation) and takes only the env's evaluation size and
    feature standardisation."""
    preset = env_class(env).preset["agent"]
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
