"""The training package's small parts: the run-ahead schedule and the run store."""

import pytest
import torch

from llmrl_cli.config import build_config
from llmrl_cli.errors import UserError
from llmrl_cli.training import RunStore, run_ahead_step


def test_envs_asked_before_step_ahead_and_the_others_wait_at_most_the_limit():
    # env 1's prompt is new: it waits while envs 0 and 2 step from the cache
    assert run_ahead_step([True, False, True], [0, 0, 0], 2) == ([True, False, True], [0, 1, 0],
                                                                 True)
    assert run_ahead_step([True, False, True], [0, 1, 0], 2) == ([True, False, True], [0, 2, 0],
                                                                 True)
    # it has waited 2 steps: all step together, and its count starts again
    assert run_ahead_step([True, False, True], [0, 2, 0], 2) == ([True] * 3, [0, 0, 0], False)
    # all asked, or none: lockstep
    assert run_ahead_step([False, False], [0, 0], 4) == ([True, True], [0, 0], False)
    assert run_ahead_step([True, True], [0, 0], 4) == ([True, True], [0, 0], False)


def test_the_store_appends_rows_keeps_them_on_resume_and_refuses_another_config(tmp_path):
    cfg = build_config({"env": "frozenlake", "algo": "dqn", "out": str(tmp_path)})
    store = RunStore(cfg)
    assert store.open() is None
    store.start()
    for episode in range(3):
        store.append_row({"episode": episode, "eval_return": 0.5}, ["episode", "eval_return"])
        if episode == 1:
            store.save_checkpoint({"csv_rows": 2})  # the third row comes after it
    with pytest.raises(UserError, match="being run by another process"):
        RunStore(cfg).lock()
    store.release()
    resumed = RunStore(cfg)
    state = resumed.open()
    assert state == {"csv_rows": 2, "csv_text": "episode,eval_return\r\n0,0.5\r\n1,0.5\r\n"}
    resumed.restore_rows(state)
    assert store.csv_path.read_bytes() == b"episode,eval_return\r\n0,0.5\r\n1,0.5\r\n"
    resumed.release()
    other = build_config({"env": "frozenlake", "algo": "dqn", "out": str(tmp_path), "k": 3})
    with pytest.raises(UserError, match=r"different configuration \(differs in: k\)"):
        RunStore(other).open()
    replacing = RunStore(other, overwrite=True, log=lambda *_: None)
    assert replacing.open() is None and store.csv_path.exists()  # not moved before the start
    replacing.start()
    assert not store.csv_path.exists() and "k: 3" in store.yaml_path.read_text()


def test_a_csv_kept_aside_never_replaces_one_kept_before(tmp_path):
    cfg = build_config({"env": "frozenlake", "algo": "dqn", "out": str(tmp_path)})
    store = RunStore(cfg, log=lambda *_: None)
    store.open()
    store.start()
    store.append_row({"episode": 0}, ["episode"])
    store.save_checkpoint({"csv_rows": 1})
    state = torch.load(store.ckpt_path, weights_only=False)
    for edit in ("episode\r\n7\r\n", "episode\r\n8\r\n"):
        store.csv_path.write_bytes(edit.encode())
        store.restore_rows(state)
        assert store.csv_path.read_bytes() == b"episode\r\n0\r\n"
    kept = {p.name: p.read_bytes() for p in cfg.run_dir.glob("seed_0.changed*.csv")}
    assert kept == {"seed_0.changed.csv": b"episode\r\n7\r\n",
                    "seed_0.changed-2.csv": b"episode\r\n8\r\n"}

def test_the_evaluator_plays_its_episodes_in_batches_of_its_envs_on_its_own_stream():
    import torch

    from llmrl_cli.envs import make
    from llmrl_cli.priors.draws import VisitCounter
    from llmrl_cli.training.evaluator import Evaluator
    from llmrl_cli.training.steps import Decision, Slot, StepState

    slots = [Slot(make("frozenlake"), 3) for _ in range(2)]
    batches = []

    def state_of(slot):
        return StepState(slot.obs, slot.history, tuple(slot.env.optimal_actions()), ("", None))

    def expert(states, agents, streams):  # the expert's first optimal action, alone in C(s)
        batches.append((len(states), set(streams)))
        return [Decision([s.optimal[0]], torch.empty(0), torch.zeros(1), None) for s in states]

    evaluator = Evaluator(seed=0, episodes=3, policy="greedy", slots=slots, state_of=state_of,
                          choose=lambda decision, policy, rng: 0, visits=VisitCounter())
    assert evaluator.play(40, expert) == (1.0, 1.0)  # the goal's reward is 1
    # 3 episodes on 2 envs: two together, then one; the shortest path is 6 steps
    assert batches == [(2, {"eval@40"})] * 6 + [(1, {"eval@40"})] * 6

    def edge(states, agents, streams):  # always "left": the agent stays put at the start
        return [Decision(["left"], torch.empty(0), torch.zeros(1), None) for _ in states]

    assert evaluator.play(40, edge) == (0.0, 0.0)  # the episode cap ends each episode
