import random

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import make
from llmrl_cli.envs.babyai import ACTIONS, describe_view

LEVELS = ["babyai-goto", "babyai-pickup", "babyai-unlock", "babyai-putnext"]

START = (
    "You see a yellow key 1 step left and 1 step forward. You see a grey ball 1 step right and "
    "1 step forward. You see a purple key 1 step left and 2 steps forward. You see a green key 1 "
    "step right and 2 steps forward. You see a green ball 3 steps forward. You see a red box 2 "
    "steps right and 2 steps forward. You see a green key 2 steps right and 4 steps forward. You "
    "see a grey ball 1 step right and 5 steps forward. There is a wall 6 steps forward. There is "
    "a wall 2 steps left. The cell in front of you is free. You are carrying nothing."
)


def test_seed_zero_start_text_instruction_and_actions():
    env = make("babyai-goto")
    obs, info = env.reset(seed=0)
    assert env.instruction == "Your task is to go to the green ball."
    assert obs == {"text": START, "actions": list(ACTIONS)}
    assert info == {"success": False, "mission": "go to the green ball"}
    assert env.feature_task == "Mission: go to the green ball"
    obs, *_ = env.step("turn left")  # the ball 3 steps ahead is now 3 steps to the right
    assert "You see a green ball 3 steps right." in obs["text"]


def test_prompt_for_a_fixed_seed():
    env = make("babyai-goto")
    obs, _ = env.reset(seed=0)
    prompt = env.prompt(env.instruction, obs["text"], str(obs["actions"]))
    assert prompt == (
        "Your task is to go to the green ball.\nHistory:\n\nCurrent Observation: " + START
        + "\nTo complete the mission, what action should you take next? Based on your previous "
        "observations and actions, please select only one action for the next step from the "
        "admissible actions: ['turn left', 'turn right', 'go forward', 'pick up', 'drop', "
        "'toggle']. Action:")


@pytest.mark.parametrize("name", LEVELS)
def test_gymnasium_env_checker_passes(name):
    check_env(make(name), skip_render_check=True)


@pytest.mark.parametrize("name", LEVELS)
def test_seeded_resets_reproduce_and_seeds_differ(name):
    env = make(name)

    def start(seed):
        text = env.reset(seed=seed)[0]["text"]
        level = env._env.unwrapped
        return text, env.instruction, level.grid.encode().tobytes(), tuple(level.agent_pos)

    first = [start(s) for s in range(4)]
    assert first == [start(s) for s in range(4)]
    assert len({layout for *_, layout, _ in first}) == 4  # four different rooms


#: steps the bot needs after 5 random actions, seeds 0-9 (all 10 episodes succeed)
EXPERT_STEPS = {
    "babyai-goto": [11, 5, 10, 11, 9, 11, 9, 5, 15, 7],
    "babyai-pickup": [10, 9, 10, 12, 7, 11, 12, 11, 17, 12],
    "babyai-unlock": [24, 17, 18, 22, 25, 16, 17, 27, 14, 17],
    "babyai-putnext": [15, 15, 22, 18, 19, 24, 15, 13, 21, 12],
}


@pytest.mark.parametrize("name", LEVELS)
def test_the_bot_solves_every_episode_after_the_agent_strays(name):
    env = make(name)
    lengths = []
    for seed in range(10):
        env.reset(seed=seed)
        rng = random.Random(seed)
        for _ in range(5):  # the agent's own moves: the bot replans from where they lead
            *_, terminated, truncated, info = env.step(rng.randrange(len(ACTIONS)))
        steps = 5
        while not (terminated or truncated):
            assert len(env.optimal_actions()) == 1
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            steps += 1
        assert info["success"] and reward > 0
        lengths.append(steps)
    assert lengths == EXPERT_STEPS[name]


def test_success_reward_is_the_levels_and_the_cap_ends_an_episode():
    env = make("babyai-goto")
    env.reset(seed=0)
    steps = 0
    while True:
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        steps += 1
        if terminated:
            break
    assert info["success"] and reward == pytest.approx(1 - 0.9 * steps / 64)
    env = make("babyai-unlock", horizon=3)
    env.reset(seed=0)
    ends = [env.step("turn left")[3] for _ in range(3)]
    assert ends == [False, False, True]
    assert env.optimal_actions() == list(ACTIONS)  # over: every action is as good


@pytest.mark.parametrize("bad", ["jump", 6, -1, None])
def test_invalid_action_names_the_admissible_ones(bad):
    env = make("babyai-pickup")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="admissible actions are 'turn left', 'turn right', "
                                         "'go forward', 'pick up', 'drop', 'toggle'"):
        env.step(bad)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown BabyAI level 'BabyAI-Nope-v0'"):
        make("babyai-goto", level="BabyAI-Nope-v0")
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        make("babyai-goto", horizon=0)


def test_view_text_names_doors_walls_offsets_and_what_is_carried():
    image = np.ones((7, 7, 3), dtype=np.uint8)  # empty floor everywhere
    image[3, 5] = (4, 2, 2)  # a locked blue door right in front
    image[0, 6] = (2, 5, 0)  # a wall 3 steps left on the agent's row
    image[5, 2] = (6, 0, 0)  # a red ball 2 right, 4 forward
    image[6, 6] = (0, 0, 0)  # unseen: no wall reported to the right
    assert describe_view(image, "a yellow key") == (
        "You see a locked blue door 1 step forward. You see a red ball 2 steps right and 4 "
        "steps forward. There is a wall 3 steps left. Directly in front of you is a locked blue "
        "door. You are carrying a yellow key.")


def test_a_bot_that_cannot_plan_means_every_action(monkeypatch):
    """The BabyAI bot asserts on states it does not expect (carrying an object it did not pick
    up, seen in a PickupLoc run); the env then gives every action as optimal and tries a fresh
    bot after each step."""
    from minigrid.utils.baby_ai_bot import BabyAIBot

    env = make("babyai-pickup")
    env.reset(seed=0)

    def cannot_plan(self, action_taken=None):
        raise AssertionError

    monkeypatch.setattr(BabyAIBot, "replan", cannot_plan)
    env.step("turn left")
    assert env.optimal_actions() == list(ACTIONS) and env._bot is None
    monkeypatch.undo()
    env.step("turn left")
    assert env._bot is not None and len(env.optimal_actions()) == 1
