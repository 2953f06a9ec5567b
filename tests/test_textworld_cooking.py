import random

import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import make
from llmrl_cli.envs.textworld_cooking import pool_dir, recipe_sentence

START = (
    "-= Kitchen =- You've entered a kitchen. You hear a noise behind you and spin around, but "
    "you can't see anything other than a fridge. The fridge contains a sliced parsley. You lean "
    "against the wall, inadvertently pressing a secret button. The wall opens up to reveal an "
    "oven. Empty! What kind of nightmare TextWorld is this? You can make out a table. On the "
    "table you see a cookbook. Oh, great. Here's a counter. But the thing is empty. Silly "
    "counter, silly, empty, good for nothing counter. You can make out a stove. The stove is "
    "conventional. But the thing hasn't got anything on it. You are carrying nothing."
)
ACTIONS = ["close fridge", "close oven", "examine cookbook", "examine counter",
           "examine fridge", "examine oven", "examine parsley", "examine stove", "examine table",
           "inventory", "look", "take cookbook from table", "take parsley from fridge"]


@pytest.fixture(scope="module")
def games_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("games")


@pytest.fixture(autouse=True)
def shared_games(cache_dir, games_cache, monkeypatch):
    """One game cache for the module: each game is generated once (a few seconds)."""
    monkeypatch.setenv("LLMRL_CACHE_DIR", str(games_cache))


def test_seed_zero_prompt_text_actions_and_recipe():
    env = make("textworld-cooking", level=1, games=2)
    obs, info = env.reset(seed=0)
    assert info == {"success": False, "game": 1}
    assert env.instruction == ("Your task is to cook the meal of this recipe and eat it. "
                               "Ingredients: parsley. Directions: slice the parsley; prepare "
                               "meal.")
    assert obs == {"text": START, "actions": ACTIONS}
    assert env.prompt(env.instruction, obs["text"], str(obs["actions"])) == (
        env.instruction + "\nHistory:\n\nCurrent Observation: " + START + "\nTo cook and eat "
        "the meal, what action should you take next? Based on your previous observations and "
        "actions, please select only one action for the next step from the admissible actions: "
        + str(ACTIONS) + ". Action:")
    assert (pool_dir(1, "train") / "game-0001" / "game.z8").is_file()


def test_gymnasium_env_checker_passes():
    check_env(make("textworld-cooking", level=1, games=2), skip_render_check=True)


def test_seeded_resets_reproduce():
    env = make("textworld-cooking", level=1, games=2)
    first = [(env.reset(seed=s)[0]["text"], env.instruction) for s in range(3)]
    assert first == [(env.reset(seed=s)[0]["text"], env.instruction) for s in range(3)]
    assert len(set(first)) == 2  # both games of the pool come up


@pytest.mark.parametrize("level, lengths", [(1, [3, 3, 3]), (3, [11, 12, 11])])
def test_the_planner_solves_each_game_and_the_score_adds_up(level, lengths):
    env = make("textworld-cooking", level=level, games=3)
    played = []
    for seed in range(3):
        env.reset(seed=seed)
        total, steps, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            total, steps, done = total + reward, steps + 1, terminated or truncated
        assert info["success"] and terminated
        assert total == env._state.max_score
        played.append(steps)
    assert played == lengths


def test_the_planner_replans_after_the_agent_strays():
    env = make("textworld-cooking", level=3, games=3)
    env.reset(seed=0)
    rng = random.Random(0)
    for _ in range(3):  # detours: walk elsewhere, open things, look around
        env.step(rng.choice([a for a in env.admissible_actions() if a != env.expert_action()
                             and a.split()[0] in ("go", "open", "examine", "look")]))
    steps, done = 3, False
    while not done:
        _, _, terminated, truncated, info = env.step(env.expert_action())
        steps, done = steps + 1, terminated or truncated
    assert info["success"]
    assert steps == 16  # 11 without the detours


def test_cap_truncates_and_invalid_actions_are_named():
    env = make("textworld-cooking", level=1, games=2, horizon=2)
    env.reset(seed=0)
    assert env.step("look")[3] is False
    assert env.step("inventory")[3] is True
    with pytest.raises(ValueError, match="invalid action 'fly'; admissible actions are "
                                         "'close fridge', 'close oven'"):
        env.step("fly")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown cooking level 5"):
        make("textworld-cooking", level=5)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        make("textworld-cooking", split="dev")
    with pytest.raises(ValueError, match="games must be >= 1"):
        make("textworld-cooking", games=0)


def test_recipe_sentence():
    recipe = ("\nRecipe #1\n---------\nGather all following ingredients.\n\nIngredients:\n"
              "red potato\ncarrot\n\nDirections:\ndice the red potato\n  fry the red potato\n"
              "  prepare meal\n")
    assert recipe_sentence(recipe) == ("Ingredients: red potato, carrot. Directions: dice the "
                                       "red potato; fry the red potato; prepare meal.")
