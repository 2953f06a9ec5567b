"""The paper's settings, as docs/paper-settings.md (the ledger) lists them with their sources.

Each value here was read in the paper's code (github yanxue7/RL-LLM-Prior, commit 13b99c9;
the ledger gives file and line). The byte-exact prompts are pinned where the envs are tested:
tests/test_overcooked.py (Tomato, Salad), tests/test_alfworld.py (ALFWorld) and below (Frozen
Lake, whose prompt the paper's public code does not hold).
"""

import pandas as pd
import pytest
import torch

from llmrl_cli.agents.cql import CQLConfig
from llmrl_cli.agents.dqn import BufferBalance, DQNConfig, choose
from llmrl_cli.config import build_config
from llmrl_cli.envs import make
from llmrl_cli.priors.base import ExpertMixPrior, PriorQuery, UniformPrior, fit_length
from llmrl_cli.priors.cache import ProposalCache
from llmrl_cli.priors.draws import TRAIN_STREAM, VisitCounter, eval_stream
from llmrl_cli.priors.llm import LLMPrior, cut_completion
from llmrl_cli.priors.prompts import build_prompt, history_line
from llmrl_cli.runner import Runner
from llmrl_cli.seeding import stable_seed


# -- presets: the paper's settings are the defaults ---------------------------------------------
def test_overcooked_tomato_is_train_overcooked_py():
    dqn = build_config(env="overcooked-tomato", algo="dqn")
    prior = build_config(env="overcooked-tomato", algo="dqn-prior")
    assert (prior.episodes, prior.history_length, prior.prior_draws) == (200, 3, "memo")
    a = prior.agent
    assert (a.batch_size, a.buffer_size, a.target_update, a.tau) == (64, 4000, "soft", 0.005)
    assert (a.train_every, a.train_iters, a.train_start) == (5, 40, 0)
    assert (a.eval_every, a.eval_episodes, a.eval_policy, a.alpha) == (20, 10, "softmax", 0.1)
    assert a.exploration == "softmax"
    assert (dqn.agent.exploration, dqn.agent.epsilon, dqn.agent.eval_policy) == (
        "eps-greedy", 0.2, "softmax")


def test_overcooked_salad_is_test_overcooked_salad_py():
    dqn = build_config(env="overcooked-salad", algo="dqn")
    prior = build_config(env="overcooked-salad", algo="dqn-prior")
    assert (prior.episodes, prior.history_length, prior.prior_draws) == (300, 5, "fresh")
    a = prior.agent
    assert (a.exploration, a.epsilon, a.alpha, a.eval_policy) == ("eps-softmax", 0.2, 0.1,
                                                                  "greedy")
    assert (a.train_start, a.train_every, a.train_iters, a.batch_size) == (20, 5, 40, 64)
    assert (dqn.agent.exploration, dqn.agent.epsilon, dqn.agent.eval_policy) == (
        "eps-greedy", 0.2, "greedy")


def test_alfworld_is_train_alfworld_py():
    dqn = build_config(env="alfworld-pick", algo="dqn")
    prior = build_config(env="alfworld-pick", algo="dqn-prior")
    assert (prior.episodes, prior.history_length, prior.prior_draws) == (1000, 0, "fresh")
    a = prior.agent
    assert (a.batch_size, a.buffer_size, a.target_update, a.target_update_every) == (
        128, 20000, "hard", 20)
    assert (a.train_every, a.train_start, a.train_passes) == (10, 40, 4.0)
    assert (a.eval_every, a.eval_episodes, a.eval_policy) == (80, 26, "greedy")
    assert (a.exploration, a.epsilon, a.buffer_balance) == ("eps-greedy", 0.2, "paper")
    assert (prior.baseline_candidates, dqn.baseline_candidates) == (0, 30)
    assert dqn.agent.buffer_balance == "paper"


def test_sampling_defaults_are_the_papers():
    cfg = build_config(env="overcooked-salad", algo="dqn-prior")
    assert (cfg.k, cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (5, 1.0, 1.0, 10)
    assert (cfg.projection, cfg.stop_on_newline, cfg.prior_mode) == ("paper", False, "sample")


def test_frozen_lake_is_the_papers_config_4x4_not_slippery_horizon_20():
    env = make("frozenlake")
    assert ((env.nrow, env.ncol), env.slippery, env.horizon) == ((4, 4), False, 20)
    assert build_config(env="frozenlake", algo="dqn-prior").prior_draws == "fresh"


def test_cql_defaults_are_the_papers_command():
    cfg = CQLConfig()
    assert (cfg.cql_coef, cfg.td_reduction, cfg.gamma, cfg.batch_size) == (5.0, "sum", 0.99, 128)
    assert (cfg.grad_steps, cfg.eval_every_steps, cfg.eval_policy, cfg.tau) == (
        10_000, 500, "greedy", 0.005)
    assert (cfg.dataset_prompt_history, cfg.dataset_max_new_tokens) == (0, 20)
    run = build_config(env="overcooked-salad", algo="cql-prior")
    # one LLM of 20 new tokens for dataset proposals and evaluations; the Q input names "3"
    assert (run.history_length, run.prior_draws, run.max_new_tokens) == (5, "fresh", 20)
    assert run.agent.q_text_task == "3"


def test_q_input_texts_are_the_papers_byte_for_byte(tmp_path):
    """feat_generate: train_overcooked.py:268, train_alfworld.py:285 (its observation cut
    before LLF-Bench's "You are allowed ...", so it ends with ". "), CQL_overcook_salad.py:264
    (its task is the --task index 3)."""
    salad = make("overcooked-salad")
    assert salad.q_input("s", "a") == "Observation: s,  Action: a."
    assert salad.q_input("s", "a", "3") == "3,  Action: a, for Observation: s,"
    from llmrl_cli.envs.alfworld import AlfworldPick

    alf = AlfworldPick.__new__(AlfworldPick)  # the text rule needs no game
    assert alf.q_input("You arrive at loc 7.", "look", "Task: put a candle in toilet.") == (
        "Task: put a candle in toilet.,  Action: look, for Observation: You arrive at loc 7.. ,")
    from llmrl_cli.offline import OfflineRunner

    cfg = build_config(env="overcooked-salad", algo="cql", out=str(tmp_path), device="cpu")
    runner = OfflineRunner(cfg, log=lambda *_: None)
    runner.build()
    assert runner.q_text_task() == "3" and runner.context(runner.slots[0].env)[1] == "3"


def test_the_dqn_loss_is_the_summed_per_transition_td_error():
    from llmrl_cli.agents.dqn import DQNAgent

    agent = DQNAgent(2, DQNConfig(gamma=0.5), torch.device("cpu"))
    batch = {"features": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
             "reward": torch.tensor([1.0, 0.0]), "done": torch.tensor([1.0, 0.0]),
             "next_features": torch.zeros(2, 1, 2), "next_mask": torch.tensor([[False], [True]])}
    q = agent.q(batch["features"]).reshape(-1)
    next_q = agent.target(torch.zeros(1, 2)).reshape(())
    target = torch.tensor([1.0, 0.5 * float(next_q)])
    assert float(agent.td_loss(batch)) == pytest.approx(float(((q - target) ** 2).sum()),
                                                         rel=1e-5)


# -- acting ---------------------------------------------------------------------------------------
def test_eps_softmax_is_uniform_with_probability_eps_else_softmax():
    cfg = DQNConfig(epsilon=0.2, alpha=0.1)
    q = torch.tensor([0.0, 1.0, 0.0])  # softmax(10 q) puts ~0.9999 on index 1
    rng = torch.Generator().manual_seed(0)
    picks = [choose(q, "eps-softmax", cfg, rng) for _ in range(4000)]
    others = sum(p != 1 for p in picks) / len(picks)
    assert others == pytest.approx(0.2 * 2 / 3, abs=0.02)


def test_the_alfworld_dqn_baseline_cuts_or_repeats_its_list_to_30():
    assert fit_length(["a", "b", "c"], 7) == ["a", "b", "c", "a", "b", "c", "a"]
    assert fit_length([str(i) for i in range(40)], 30) == [str(i) for i in range(30)]
    query = PriorQuery("p", tuple("abc"))
    assert len(UniformPrior(length=30).propose([query], 5)[0]) == 30
    assert UniformPrior().propose([query], 5)[0] == ["a", "b", "c"]


def test_buffer_balance_admits_failures_while_they_are_at_most_successes_plus_100():
    prior = BufferBalance(baseline=False)
    copies = [prior.copies(False) for _ in range(102)]
    assert copies == [1] * 101 + [0]  # the 102nd failure is kept out
    assert prior.copies(True) == 1 and prior.copies(False) == 1  # a success makes room
    assert prior.copies(False) == 0


def test_buffer_balance_repeats_the_dqn_baselines_failures():
    baseline = BufferBalance(baseline=True)
    assert [baseline.copies(False) for _ in range(3)] == [2, 2, 2]
    assert baseline.copies(True) == 1
    assert (baseline.good, baseline.bad) == (4, 3)
    assert baseline.copies(False) == 1  # the surplus of successes absorbs one failure
    assert baseline.copies(False) == 2


# -- sample mode: stop words, newline, projection ---------------------------------------------------
def test_a_completion_is_cut_at_the_papers_stop_words_and_not_at_a_newline():
    text = "take the bowl\nand then <END> serve"
    assert cut_completion(text, stop_on_newline=False) == "take the bowl\nand then"
    assert cut_completion(text, stop_on_newline=True) == "take the bowl"
    assert cut_completion("chop <eos> x <END>", False) == "chop"
    assert cut_completion("  go left  ", False) == "go left"


# -- draws per visit --------------------------------------------------------------------------------
class Scripted(LLMPrior):
    """A deterministic "model": completion j of block b names action hash(prompt, b*k + j)."""

    actions = ("left", "down", "right", "up")

    def _generate(self, jobs, k):
        self.calls = getattr(self, "calls", 0) + len(jobs)
        return [[self.actions[stable_seed(self.seed, p, b * k + j) % 4] for j in range(k)]
                for p, b in jobs]


def _query():
    return PriorQuery("a prompt", ("left", "down", "right", "up"))


def test_fresh_draws_give_a_revisited_prompt_new_proposals_and_memo_the_same():
    for draws, same in (("fresh", False), ("memo", True)):
        counter = VisitCounter(draws)
        prior = Scripted(seed=0, backend="s", model="s", cache=ProposalCache(None))
        visits = [prior.propose(counter.number([_query()], [TRAIN_STREAM]), 5)[0]
                  for _ in range(4)]
        assert all((v == visits[0]) == same for v in visits[1:])
        assert prior.calls == (1 if same else 4)


def test_the_cache_never_changes_which_draws_a_visit_sees(tmp_path):
    """A warm persistent cache answers visit n with block n, exactly what the model draws."""
    cold = Scripted(seed=0, backend="s", model="s", cache=ProposalCache(tmp_path / "c.sqlite"))
    counter = VisitCounter("fresh")
    first = [cold.propose(counter.number([_query()], [TRAIN_STREAM]), 5)[0] for _ in range(3)]
    warm = Scripted(seed=0, backend="s", model="s", cache=ProposalCache(tmp_path / "c.sqlite"))
    counter = VisitCounter("fresh")
    again = [warm.propose(counter.number([_query()], [TRAIN_STREAM]), 5)[0] for _ in range(3)]
    assert again == first and getattr(warm, "calls", 0) == 0
    # one call holding the same prompt twice numbers them as successive visits
    counter = VisitCounter("fresh")
    both = warm.propose(counter.number([_query(), _query()], [TRAIN_STREAM] * 2), 5)
    assert both == first[:2]


def test_evaluations_count_their_visits_apart_from_training():
    counter = VisitCounter("fresh")
    q = _query()
    assert [x.draw for x in counter.number([q, q], [TRAIN_STREAM] * 2)] == [0, 1]
    assert [x.draw for x in counter.number([q], [eval_stream(20)])] == [0]
    assert [x.draw for x in counter.number([q], [TRAIN_STREAM])] == [2]
    counter.forget(eval_stream(20))
    assert [x.draw for x in counter.number([q], [eval_stream(20)])] == [0]


def test_expert_mix_and_score_mode_draw_afresh_per_block():
    q = PriorQuery("p", ("a", "b", "c", "d"), optimal=("a",))
    mix = ExpertMixPrior(seed=0, eps=0.9)
    blocks = [mix.propose([PriorQuery("p", q.actions, q.optimal, draw=b)], 8)[0]
              for b in range(3)]
    assert blocks[0] != blocks[1] != blocks[2]
    assert mix.propose([q], 8)[0] == blocks[0]  # block 0 is the memo's draw


def _frozenlake_cfg(tmp_path, **kw):
    return build_config(env="frozenlake", algo="dqn-prior", prior="local", episodes=10, seed=0,
                        out=str(tmp_path), device="cpu",
                        agent={"eval_every": 5, "eval_episodes": 2}, **kw)


class ScriptedRunner(Runner):
    def _build(self):
        super()._build()
        self.prior = Scripted(seed=self.cfg.seed, backend="s", model="s",
                              cache=ProposalCache(None))


class Killed(Exception):
    pass


def test_a_resumed_run_gets_the_draws_an_uninterrupted_run_would_have(tmp_path):
    timing = ["wall_s", "prior_seconds", "encoder_seconds", "update_seconds", "encoder_hits",
              "encoder_texts", "llm_calls", "llm_cache_hits", "llm_queries", "llm_tokens",
              "llm_unmatched"]
    reference = ScriptedRunner(_frozenlake_cfg(tmp_path / "ref"), log=lambda *_: None).run()

    def progress(done, total, msg):
        if msg and done == 5:
            raise Killed

    cfg = _frozenlake_cfg(tmp_path / "killed", eval_overlap=False)
    with pytest.raises(Killed):
        ScriptedRunner(cfg, progress=progress, log=lambda *_: None).run()
    runner = ScriptedRunner(cfg, log=lambda *_: None)
    resumed = runner.run()
    assert runner.visits.counts  # the training stream's counts came back from the checkpoint
    pd.testing.assert_frame_equal(pd.read_csv(resumed).drop(columns=timing),
                                  pd.read_csv(reference).drop(columns=timing))


def test_the_pure_llm_baseline_acts_by_the_prior_and_learns_nothing(tmp_path):
    cfg = build_config(env="overcooked-tomato", algo="llm", prior="expert-mix:0", episodes=4,
                       seed=0, out=str(tmp_path), device="cpu",
                       agent={"eval_every": 2, "eval_episodes": 2})
    runner = Runner(cfg, log=lambda *_: None)
    df = pd.read_csv(runner.run())
    assert (df.grad_steps == 0).all() and len(runner.replay) == 0
    # the expert's proposals only: the prior alone solves the task in the fewest macro-steps
    assert (df.eval_success == 1.0).all()


def test_the_pure_llm_baseline_greedy_is_the_most_frequent_proposal(tmp_path):
    cfg = build_config(env="frozenlake", algo="llm", prior="expert-mix:0.5", episodes=1,
                       out=str(tmp_path))
    runner = Runner(cfg, log=lambda *_: None)
    from llmrl_cli.runner import Decision

    d = Decision(["up", "left", "left", "down", "up"], torch.empty(0),
                 torch.tensor([2.0, 2.0, 2.0, 1.0, 2.0]), None)
    rng = torch.Generator().manual_seed(0)
    assert runner.choose(d, "greedy", rng) == 0
    assert {runner.choose(d, "softmax", rng) for _ in range(200)} == set(range(5))


def test_a_uniform_prior_is_refused_for_the_pure_llm_baseline():
    from llmrl_cli.errors import UserError

    with pytest.raises(UserError, match="acts by the prior alone"):
        build_config(env="frozenlake", algo="llm", prior="uniform")


# -- prompts ----------------------------------------------------------------------------------
def test_the_frozen_lake_prompt_in_the_overcooked_layout():
    env = make("frozenlake")
    obs, _ = env.reset(seed=0)
    history = [history_line(obs["text"], "down")]
    nxt, *_ = env.step("down")
    assert build_prompt("frozenlake", env.instruction, nxt["text"], nxt["actions"], history) == (
        f"{env.instruction}\nHistory:\nObservation: {obs['text']}. Action: down.\n"
        f"Current Observation: {nxt['text']}\nTo reach the goal without falling into a hole, "
        "what action should you take next? Based on your previous observations and actions, "
        "please select only one action for the next step from the admissible actions: "
        "['left', 'down', 'right', 'up']. Action:")


def test_the_runner_keeps_history_length_lines(tmp_path):
    cfg = build_config(env="overcooked-salad", algo="dqn-prior", prior="expert-mix:0.5",
                       episodes=1, out=str(tmp_path), device="cpu")
    runner = Runner(cfg, log=lambda *_: None)
    runner.build()
    assert runner.slots[0].history.maxlen == 5 and runner.eval_slots[0].history.maxlen == 5


def test_a_draw_pool_fetches_later_visits_blocks_in_one_call_and_changes_no_draw():
    one = Scripted(seed=0, backend="s", model="s", cache=ProposalCache(None))
    pooled = Scripted(seed=0, backend="s", model="s", cache=ProposalCache(None), draw_pool=4)
    counters = VisitCounter("fresh"), VisitCounter("fresh")
    visits = {id(p): [] for p in (one, pooled)}
    for _ in range(6):
        for prior, counter in zip((one, pooled), counters):
            visits[id(prior)].append(prior.propose(counter.number([_query()], [TRAIN_STREAM]),
                                                   5)[0])
    assert visits[id(one)] == visits[id(pooled)]
    assert one.calls == 6 and pooled.calls == 8  # blocks 0-3, then 4-7 when visit 4 missed
    assert pooled.stats.model_queries == 2 and pooled.stats.cache_hits == 4
