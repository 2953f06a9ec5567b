import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import make
from llmrl_cli.errors import UserError

START = (
    "You are at row 1, column 1 of a 4x4 frozen lake; the goal is at row 4, column 4. "
    "To your left is the edge, below you is frozen ice, to your right is frozen ice, "
    "above you is the edge."
)


def test_start_text_actions_and_instruction():
    env = make("frozenlake")
    obs, info = env.reset(seed=0)
    assert obs == {"text": START, "actions": ["left", "down", "right", "up"]}
    assert env.instruction == (
        "Your task is to walk across the frozen lake to the goal without falling into a hole."
    )
    assert info["success"] is False


def test_text_names_holes_and_goal():
    env = make("frozenlake")
    env.reset(seed=0)
    obs, *_ = env.step("right")  # (1,2): a hole below
    assert "below you is a hole" in obs["text"]
    env.reset(seed=0)
    for move in ["down", "down", "right", "right", "down"]:
        obs, *_ = env.step(move)
    assert "at row 4, column 3" in obs["text"] and "to your right is the goal" in obs["text"]


def test_goal_gives_reward_one_and_terminates():
    env = make("frozenlake")
    env.reset(seed=0)
    rewards = []
    for move in ["down", "down", "right", "right", "down"]:
        _, r, terminated, truncated, info = env.step(move)
        rewards.append(r)
        assert not terminated and not truncated and not info["success"]
    obs, r, terminated, truncated, info = env.step(2)  # index 2 = right
    assert (r, terminated, truncated, info["success"]) == (1.0, True, False, True)
    assert obs["text"].endswith("You reached the goal.")
    assert rewards == [0.0] * 5


def test_hole_ends_episode_without_reward():
    env = make("frozenlake")
    env.reset(seed=0)
    env.step("right")
    obs, r, terminated, truncated, info = env.step("down")
    assert (r, terminated, truncated, info["success"]) == (0.0, True, False, False)
    assert obs["text"].endswith("You fell into a hole.")


def test_truncated_after_horizon():
    env = make("frozenlake", horizon=20)
    env.reset(seed=0)
    for t in range(20):
        _, r, terminated, truncated, _ = env.step("up")  # bump the edge, stay put
        assert not terminated and truncated == (t == 19)


@pytest.mark.parametrize("bad", ["jump", 4, -1, 1.5, None, True])
def test_invalid_action_names_admissible_actions(bad):
    env = make("frozenlake")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="admissible actions are 'left', 'down', 'right', 'up'"):
        env.step(bad)


def test_gymnasium_env_checker_passes():
    check_env(make("frozenlake"), skip_render_check=True)
    check_env(make("frozenlake", map_name="8x8", slippery=True), skip_render_check=True)


def test_expert_follows_a_shortest_path():
    env = make("frozenlake")
    obs, _ = env.reset(seed=0)
    assert env.optimal_actions() == ["down", "right"]
    steps = 0
    while True:
        obs, r, terminated, truncated, info = env.step(env.expert_action())
        steps += 1
        if terminated or truncated:
            break
    assert info["success"] and steps == 6  # the 4x4 map's shortest path


def test_options_and_unknown_env():
    env = make("frozenlake", map_name="8x8", slippery=True)
    obs, _ = env.reset(seed=3)
    assert "of a 8x8 frozen lake" in obs["text"] and "slippery" in obs["text"]
    with pytest.raises(UserError, match="unknown env 'lake'; choose one of: alfworld, alfworld-pick"):
        make("lake")
