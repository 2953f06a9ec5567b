import random

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import make
from llmrl_cli.envs.sokoban import ACTIONS, FLOOR, TARGET, WALL, move, solution_lengths

START = (
    "The map, row by row (# wall, _ floor, O target, X box, * box on a target, P you, + you on "
    "a target): ###### ##O__# ##___# ###X_# ###P_# ######. You are at row 5, column 4. Boxes off "
    "target: row 4, column 4. Empty targets: row 2, column 3."
)


def test_seed_zero_start_text_and_expert():
    env = make("sokoban")
    obs, info = env.reset(seed=0)
    assert obs == {"text": START, "actions": list(ACTIONS)}
    assert info == {"success": False, "level": 1826701614}
    assert env.render().splitlines()[3] == "###X_#"
    assert env.optimal_actions() == ["up"]


@pytest.mark.parametrize("options", [{}, {"boxes": 2, "dim": 7}])
def test_gymnasium_env_checker_passes(options):
    check_env(make("sokoban", **options), skip_render_check=True)


def test_seeded_resets_reproduce_and_differ():
    env = make("sokoban")
    first = [env.reset(seed=s)[0]["text"] for s in range(5)]
    assert first == [env.reset(seed=s)[0]["text"] for s in range(5)]
    assert len(set(first)) == 5


def test_pushes_moves_and_rewards_follow_gym_sokoban():
    fixed = np.array([[WALL] * 5, [WALL, FLOOR, FLOOR, TARGET, WALL],
                      [WALL, FLOOR, FLOOR, FLOOR, WALL], [WALL] * 5])
    boxes = frozenset({(1, 2)})
    # right: pushes the box onto the target; up: a wall, nothing moves
    assert move(fixed, (1, 1), boxes, 3) == ((1, 2), frozenset({(1, 3)}))
    assert move(fixed, (1, 1), boxes, 0) == ((1, 1), boxes)
    # a box against a wall does not move, and neither does the player
    assert move(fixed, (1, 2), frozenset({(1, 3)}), 3) == ((1, 2), frozenset({(1, 3)}))
    assert solution_lengths(fixed, (1, 1), boxes) == {1: 3, 3: 1}  # down, up, right
    env = make("sokoban")
    env.reset(seed=0)
    rewards = []
    while True:
        _, reward, terminated, truncated, info = env.step(env.expert_action())
        rewards.append(round(reward, 6))
        if terminated:
            break
    assert info["success"]
    assert rewards == [-0.1, -0.1, -0.1, -0.1, 10.9]  # steps cost 0.1; last box +1 and +10


#: shortest solutions of seeds 0-9 (one box, 6x6, at least 4 moves)
EXPERT_STEPS = [5, 4, 8, 5, 5, 4, 5, 5, 5, 6]


def test_the_solver_solves_every_level_in_the_fewest_moves():
    env = make("sokoban")
    lengths = []
    for seed in range(10):
        env.reset(seed=seed)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, info = env.step(env.expert_action())
            steps, done = steps + 1, terminated or truncated
        assert info["success"]
        lengths.append(steps)
    assert lengths == EXPERT_STEPS


def test_the_solver_replans_after_random_moves_or_gives_every_move_when_stuck():
    env = make("sokoban", boxes=2)
    solved = 0
    for seed in range(10):
        env.reset(seed=seed)
        rng = random.Random(seed)
        for _ in range(3):
            env.step(rng.randrange(4))
        done, info = False, {"success": False}
        while not done:
            optimal = env.optimal_actions()
            _, _, terminated, truncated, info = env.step(optimal[0])
            done = terminated or truncated
        solved += info["success"]
    assert solved == 10
    env = make("sokoban")
    env.reset(seed=0)
    env.boxes = frozenset({(1, 4)})  # into the corner right of the target: no solution left
    assert env.optimal_actions() == list(ACTIONS)


def test_cap_and_bad_input():
    env = make("sokoban", horizon=2)
    env.reset(seed=0)
    assert env.step("left")[3] is False
    assert env.step("left")[3] is True
    with pytest.raises(ValueError, match="admissible actions are 'up', 'down', 'left', 'right'"):
        env.step("jump")
    for bad, text in [({"dim": 4}, "dim must be between 5 and 12"),
                      ({"boxes": 0}, "boxes must be 1, 2 or 3"),
                      ({"min_moves": 0}, "min_moves must be >= 1")]:
        with pytest.raises(ValueError, match=text):
            make("sokoban", **bad)
