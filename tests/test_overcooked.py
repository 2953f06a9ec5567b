"""Overcooked: conformance with recordings of the original env and the paper's dataset, rules,
the expert, the prompt and the env interface."""

import json
import time
from collections import deque

import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import REGISTRY, make
from llmrl_cli.envs.overcooked_sim import cell
from llmrl_cli.priors.prompts import build_prompt, history_line
from tests.conftest import FIXTURES

TRACES = {
    "overcooked-tomato": "overcooked_tomato_traces_sample.jsonl",
    "overcooked-salad": "overcooked_lettuce_tomato_traces_sample.jsonl",
}
DATASET = "overcooked_lettuce_tomato_paper_dataset.jsonl"
GOAL_PHRASE = " To serve the dish"

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"conformance fixtures not found at {FIXTURES} "
    "(they sit beside the project checkout in ../shared/fixtures)")


def _load(name: str) -> list[dict]:
    with open(FIXTURES / name) as f:
        return [json.loads(line) for line in f]


def _description(text: str) -> str:
    return text.split(GOAL_PHRASE)[0]


# -- conformance --------------------------------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("env_name", list(TRACES))
def test_every_recorded_episode_of_the_original_replays_exactly(env_name):
    episodes = _load(TRACES[env_name])
    assert len(episodes) == 40
    env = make(env_name)
    matched_steps = 0
    for ep in episodes:
        where = f"{env_name} episode {ep['episode_index']}"
        obs, _ = env.reset()
        assert obs["text"] == _description(ep["init_obs_text"]), where
        assert obs["actions"] == ep["init_actions"], where
        for step in ep["steps"]:
            at = f"{where} step {step['t']}"
            assert obs["text"] == _description(step["obs_text"]), at
            assert obs["actions"] == step["actions"], at
            assert obs["actions"][step["action"]] == step["action_label"], at
            obs, reward, terminated, truncated, info = env.step(step["action"])
            assert info["macro_action_steps"] == step["macro_action_steps"], at
            assert info["primitive_rewards"] == step["prim_rewards"], at
            assert abs(reward - step["reward"]) <= 1e-9, at
            assert terminated == step["done"], at
            matched_steps += 1
        assert obs["text"] == _description(ep["final_obs_text"]), where
        assert obs["actions"] == ep["final_actions"], where
        assert truncated == (ep["ended_by"] == "cap"), where
        if terminated:
            assert info["primitive_steps"] == ep["info_episode"]["l"], where
    assert matched_steps == sum(len(ep["steps"]) for ep in episodes)


def _dataset_episodes(rows: list[dict], start_text: str) -> list[list[dict]]:
    """Split the transitions into episodes: a row continues the previous one when its text is
    the previous next-text and the previous row did not end the episode."""
    episodes: list[list[dict]] = []
    for row in rows:
        if episodes and not episodes[-1][-1]["done"] and len(episodes[-1]) < 51 \
                and episodes[-1][-1]["next_obs_text"] == row["obs_text"]:
            episodes[-1].append(row)
        else:
            assert row["obs_text"] == start_text, "an episode must start at the start state"
            episodes.append([row])
    return episodes


@needs_fixtures
def test_every_transition_of_the_paper_dataset_replays_exactly():
    rows = _load(DATASET)
    env = make("overcooked-salad")
    start, _ = env.reset()
    episodes = _dataset_episodes(rows, start["text"])
    assert (len(rows), len(episodes), sum(ep[-1]["done"] for ep in episodes)) == (4329, 133, 100)
    matched = 0
    for k, episode in enumerate(episodes):
        obs, _ = env.reset()
        for t, row in enumerate(episode):
            at = f"dataset episode {k} step {t}"
            assert row["instruction"] == env.instruction, at
            assert (obs["text"], obs["actions"]) == (row["obs_text"], row["actions"]), at
            obs, reward, terminated, truncated, _ = env.step(row["action"])
            assert (obs["text"], obs["actions"]) == (row["next_obs_text"], row["next_actions"]), at
            assert abs(reward - row["reward"]) <= 1e-9, at
            assert terminated == row["done"], at
            matched += 1
    assert matched == 4329


# -- rules --------------------------------------------------------------------------------------
def test_start_states():
    env = make("overcooked-tomato")
    obs, info = env.reset(seed=0)
    assert obs == {
        "text": "There is a fixed cutting board in the room. You notice a tomato on the table. "
                "Currently you don't have anything in hand.",
        "actions": ["pick up the tomato", "take the bowl", "walk to the cutting board",
                    "serve nothing", "chop nothing"]}
    assert env.instruction == ("Your task is to serve the dish of a bowl only containing "
                               "chopped tomato.")
    assert info["success"] is False
    env = make("overcooked-salad")
    obs, _ = env.reset()
    assert obs["text"] == (
        "There are two fixed cutting boards in the room. You notice a tomato, a lettuce and an "
        "onion on the different tables. Currently you don't have anything in hand.")
    assert obs["actions"][3] == "take the empty bowl" and len(obs["actions"]) == 8
    assert env.instruction == ("Your task is to serve the dish of a bowl only containing chopped "
                               "tomato and lettuce.")
    assert env.goal_phrase() == ("To serve the dish of a bowl only containing chopped tomato and "
                                 "lettuce, you should first")


def test_macro_reward_is_the_discounted_sum_and_a_wrong_delivery_sends_items_back():
    env = make("overcooked-tomato")
    env.reset()
    _, reward, *_ = env.step("pick up the tomato")
    assert reward == -0.001 + 0.99 * -0.001
    obs, reward, terminated, _, info = env.step("serve the dish")  # an unchopped tomato
    rewards = info["primitive_rewards"]
    assert rewards == [-0.001] * 6 + [-0.001 + -0.1]
    expected, discount = 0.0, 1.0
    for r in rewards:
        expected += discount * r
        discount *= 0.99
    assert reward == expected and not terminated and not info["success"]
    state = env.state
    assert state.pos[0] == cell(0, 5) and state.held[state.layout.agent] == -1
    assert obs["text"] == ("There is a fixed cutting board in the room. Currently you don't have "
                           "anything in hand.")


def test_chopping_earns_the_subtask_reward_and_the_expert_plan_delivers():
    env = make("overcooked-tomato")
    env.reset()
    env.step("pick up the tomato")
    obs, *_ = env.step("put the tomato on the cutting board")
    assert obs["actions"][4] == "chop the tomato"
    obs, _, _, _, info = env.step("chop the tomato")
    assert info["primitive_rewards"] == [-0.001, -0.001, -0.001 + 0.2]
    assert "A chopped tomato is on the cutting board." in obs["text"]
    env.step("take the bowl")
    obs, *_ = env.step("put the bowl on the cutting board")
    assert obs["text"].endswith("carrying a bowl containing chopped tomato in hand.")
    obs, reward, terminated, truncated, info = env.step("serve the dish")
    assert terminated and not truncated and info["success"]
    assert info["primitive_rewards"][-1] == -0.001 + 1


def test_the_200_primitive_step_limit_ends_the_episode_and_a_macro_may_overrun_it():
    env = make("overcooked-tomato", horizon=1000)
    env.reset()
    _, _, terminated, _, info = env.step("serve nothing")  # walk to the delivery counter
    assert info["macro_action_steps"] == 5
    for _ in range(192):  # one primitive step each, beside the delivery counter
        _, _, terminated, _, info = env.step("serve nothing")
        assert not terminated
    assert info["primitive_steps"] == 197
    _, _, terminated, truncated, info = env.step("pick up the tomato")
    assert info["macro_action_steps"] == 7 and info["primitive_steps"] == 204
    assert terminated and not truncated and not info["success"]


def test_truncation_at_the_paper_cap_and_the_horizon_option():
    for name, cap in (("overcooked-tomato", 31), ("overcooked-salad", 51)):
        env = make(name)
        assert env.horizon == cap
        env.reset()
        for t in range(cap):
            _, _, terminated, truncated, _ = env.step("chop nothing")
            assert not terminated and truncated == (t == cap - 1)
    env = make("overcooked-salad", horizon=3)
    env.reset()
    assert [env.step(7)[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(ValueError):
        make("overcooked-salad", horizon=0)


def test_actions_by_index_or_label_and_bad_actions_rejected():
    a, b = make("overcooked-salad"), make("overcooked-salad")
    a.reset(), b.reset()
    assert a.step(0)[:4] == b.step("pick up the tomato")[:4]
    for bad in (8, -1, "chop", 1.5, True):
        with pytest.raises(ValueError, match="admissible actions"):
            a.step(bad)


def test_gymnasium_env_checker_passes():
    for name in TRACES:
        check_env(make(name), skip_render_check=True)


def test_registered_with_descriptions():
    for name in TRACES:
        assert name in REGISTRY and REGISTRY[name][1]


# -- expert -------------------------------------------------------------------------------------
def _fewest_macro_steps(state) -> int | None:
    """Independent plain breadth-first search over macro-actions (no shared memo)."""
    frontier, seen, depth = deque([state]), {state.key()}, 0
    while frontier:
        depth += 1
        for _ in range(len(frontier)):
            current = frontier.popleft()
            for action in range(len(current.layout.macros)):
                nxt = current.copy()
                if nxt.run_macro(action).delivered:
                    return depth
                if nxt.key() not in seen:
                    seen.add(nxt.key())
                    frontier.append(nxt)
    return None


def _follow_expert(env) -> tuple[int, bool]:
    steps = 0
    while True:
        labels = env.optimal_actions()
        assert labels and set(labels) <= set(env.admissible_actions())
        _, _, terminated, truncated, info = env.step(labels[-1])
        steps += 1
        if terminated or truncated:
            return steps, bool(info["success"])


@pytest.mark.parametrize("name, fewest", [("overcooked-tomato", 6), ("overcooked-salad", 10)])
def test_expert_delivers_from_the_start_in_the_fewest_macro_steps(name, fewest):
    env = make(name)
    env.reset()
    assert _fewest_macro_steps(env.state) == fewest == env.steps_to_success()
    assert env.optimal_actions()[0] == "pick up the tomato"
    assert _follow_expert(env) == (fewest, True)


@needs_fixtures
@pytest.mark.parametrize("env_name", list(TRACES))
def test_expert_is_optimal_from_states_of_the_recordings(env_name):
    env = make(env_name, horizon=1000)
    for ep in _load(TRACES[env_name])[::8]:
        cut = len(ep["steps"]) // 2
        env.reset()
        for step in ep["steps"][:cut]:
            env.step(step["action"])
        fewest = _fewest_macro_steps(env.state)
        assert fewest is not None and env.steps_to_success() == fewest
        steps, success = _follow_expert(env)
        assert success and steps == fewest, f"episode {ep['episode_index']} from step {cut}"


def test_expert_answers_in_milliseconds():
    env = make("overcooked-salad")
    env.reset()
    env.optimal_actions()  # the first call explores every state reachable from here
    start, calls = time.perf_counter(), 0
    for _ in range(5):
        env.reset()
        for action in (0, 4, 7, 1, 5, 7, 3):
            env.optimal_actions()
            env.step(action)
            calls += 1
    assert (time.perf_counter() - start) / calls < 0.005


# -- prompt -------------------------------------------------------------------------------------
def test_prompt_reproduces_the_papers_layout():
    env = make("overcooked-tomato")
    obs, _ = env.reset()
    first = build_prompt("overcooked-tomato", env.instruction, obs["text"], obs["actions"])
    assert first == (
        "Your task is to serve the dish of a bowl only containing chopped tomato.\nHistory:\n\n"
        "Current Observation: There is a fixed cutting board in the room. You notice a tomato on "
        "the table. Currently you don't have anything in hand.\nTo serve the dish of a bowl "
        "containing only chopped tomatoes, what action should you take next? Based on your "
        "previous observations and actions, please select only one action for the next step "
        "from the admissible actions: ['pick up the tomato', 'take the bowl', 'walk to the "
        "cutting board', 'serve nothing', 'chop nothing']. Action:")
    env = make("overcooked-salad")
    obs, _ = env.reset()
    history = [history_line(obs["text"], "pick up the tomato")]
    nxt, *_ = env.step("pick up the tomato")
    prompt = build_prompt("overcooked-salad", env.instruction, nxt["text"], nxt["actions"],
                          history)
    assert prompt == (
        "Your task is to serve the dish of a bowl only containing chopped tomato and lettuce.\n"
        "History:\nObservation: " + obs["text"] + ". Action: pick up the tomato.\n"
        "Current Observation: There are two fixed cutting boards in the room. You notice a "
        "lettuce and an onion on the different tables. Currently you are carrying an unchopped "
        "tomato in hand.\nTo serve the dish of a bowl only containing chopped tomato and "
        "lettuce, what action should you take next? Based on your previous observations and "
        "actions, please select only one action for the next step from the admissible actions: "
        + str(nxt["actions"]) + ". Action:")
