from collections import deque

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import make
from llmrl_cli.envs.crafter import ACTIONS, goal_text, offset_text

MOVES = {(-1, 0): "move west", (1, 0): "move east", (0, -1): "move north", (0, 1): "move south"}


def test_start_text():
    env = make("crafter")
    obs, info = env.reset(seed=3)
    assert obs["actions"] == list(ACTIONS) and len(ACTIONS) == 17
    assert obs["text"] == (
        "You see: grass 1 step north; tree 1 step south and 4 steps west. You face grass "
        "(south). Your health 9/9, food 9/9, drink 9/9, energy 9/9. You have nothing.")
    assert info == {"success": False, "world": 1742692731}
    assert env.instruction.startswith("Your goal is to place a table. Crafter is a 2D world")
    assert not type(env).has_expert()


def test_goals_read_as_tasks():
    assert [goal_text(g) for g in ("place_table", "make_wood_pickaxe", "defeat_zombie",
                                   "collect_wood", "wake_up", "eat_cow")] == [
        "place a table", "make a wood pickaxe", "defeat a zombie", "collect wood", "wake up",
        "eat a cow"]


def test_offsets_read_as_compass_steps():
    assert offset_text(0, -1) == "1 step north"
    assert offset_text(-2, 3) == "3 steps south and 2 steps west"
    assert offset_text(4, 0) == "4 steps east"


def test_gymnasium_env_checker_passes():
    check_env(make("crafter", horizon=20), skip_render_check=True)


def test_seeded_resets_reproduce_and_differ():
    env = make("crafter")
    first = [env.reset(seed=s)[0]["text"] for s in range(4)]
    assert first == [env.reset(seed=s)[0]["text"] for s in range(4)]
    assert len(set(first)) == 4
    rng = np.random.default_rng(0)
    actions = [int(rng.integers(17)) for _ in range(60)]
    runs = []
    for _ in range(2):
        env.reset(seed=5)
        runs.append([env.step(a)[0]["text"] for a in actions])
    assert runs[0] == runs[1]


def _path_to_tree(env) -> list[tuple[int, int]]:
    """Breadth-first moves over walkable cells to a cell next to a tree, then the direction
    of that tree (the move that turns the player to face it)."""
    world, start = env._game._world, tuple(int(v) for v in env._game._player.pos)
    parents, frontier = {start: None}, deque([start])
    while frontier:
        cell = frontier.popleft()
        for d in MOVES:
            nxt = (cell[0] + d[0], cell[1] + d[1])
            material, obj = world[nxt]
            if material == "tree":
                steps = [d]
                while parents[cell] is not None:
                    prev = parents[cell]
                    steps.append((cell[0] - prev[0], cell[1] - prev[1]))
                    cell = prev
                return steps[::-1]
            if nxt not in parents and material in ("grass", "sand", "path") and obj is None:
                parents[nxt] = cell
                frontier.append(nxt)
    raise AssertionError("no tree reachable")


def test_a_scripted_player_collects_wood_and_places_a_table():
    """Walk to a tree and collect it, twice, then place the table on the cell the tree left:
    the goal ends the episode as a success, each first achievement pays 1 and the text says
    which was unlocked."""
    env = make("crafter", goal="place_table")
    env.reset(seed=0)
    steps = []
    while env._game._player.inventory["wood"] < 2:
        for d in _path_to_tree(env):
            steps.append(env.step(MOVES[d]))
        assert steps[-1][0]["text"].split("You face ")[1].startswith("tree")
        steps.append(env.step("do"))
    assert not any(s[2] or s[4]["success"] for s in steps)
    unlocked = [s[0]["text"].split(".")[0] for s in steps if s[0]["text"].startswith("You un")]
    assert unlocked == ["You unlocked: collect wood"]
    assert sum(s[1] for s in steps) == pytest.approx(1.0)  # the first wood; health unchanged
    obs, reward, terminated, truncated, info = env.step("place table")
    assert info["success"] and terminated and not truncated
    assert reward == pytest.approx(1.0)
    assert obs["text"].startswith("You unlocked: place table. ")
    assert "table 1 step" in obs["text"] and "You have nothing." in obs["text"]


def test_bad_goal_options_and_actions_are_errors():
    with pytest.raises(ValueError, match="unknown goal 'win'; choose one of: collect_coal"):
        make("crafter", goal="win")
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        make("crafter", horizon=0)
    env = make("crafter")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action 'jump'; admissible actions are 'noop', "
                                         "'move west'"):
        env.step("jump")


def test_the_horizon_truncates():
    env = make("crafter", horizon=5)
    env.reset(seed=1)
    ends = [env.step("noop")[2:4] for _ in range(5)]
    assert ends == [(False, False)] * 4 + [(False, True)]
