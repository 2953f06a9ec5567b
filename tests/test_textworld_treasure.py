import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import make
from llmrl_cli.envs.textworld_treasure import TextWorldTreasure

START = ("-= Playroom =- Guess what, you are in a place we're calling a playroom. You need an "
         "unblocked exit? You should try going east. You need an unblocked exit? You should try "
         "going north. There is a keycard on the floor. You are carrying nothing.")
ACTIONS = ["examine keycard", "go east", "go north", "inventory", "look", "take keycard"]


@pytest.fixture(scope="module")
def games_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("games")


@pytest.fixture(autouse=True)
def shared_games(cache_dir, games_cache, monkeypatch):
    """One game cache for the module: each game is generated once (a few seconds)."""
    monkeypatch.setenv("LLMRL_CACHE_DIR", str(games_cache))


def test_seed_zero_objective_text_and_actions():
    env = make("textworld-treasure", level=5, games=3)
    obs, info = env.reset(seed=0)
    assert info == {"success": False, "game": 2}
    assert env.instruction == (
        "Welcome to another fast paced round of TextWorld! Here is how to play! First of all, "
        "venture east. And then, take a trip east. With that done, lift the latchkey from the "
        "floor of the pantry. Alright, thanks!")
    assert obs == {"text": START, "actions": ACTIONS}
    assert env.expert_action() == "go east"
    assert (TextWorldTreasure.pool_dir(5, "train") / "game-0002" / "game.z8").is_file()


def test_gymnasium_env_checker_passes():
    check_env(make("textworld-treasure", level=5, games=2), skip_render_check=True)


def test_seeded_resets_reproduce():
    env = make("textworld-treasure", level=5, games=3)
    first = [(env.reset(seed=s)[0]["text"], env.instruction) for s in range(3)]
    assert first == [(env.reset(seed=s)[0]["text"], env.instruction) for s in range(3)]
    assert len(set(first)) == 2  # seeds 0-2 draw games 2, 1, 2


@pytest.mark.parametrize("level, lengths", [(5, [3, 3, 3]), (15, [6, 6, 6])])
def test_the_planner_solves_each_game(level, lengths):
    env = make("textworld-treasure", level=level, games=3)
    played = []
    for seed in range(3):
        env.reset(seed=seed)
        total, steps, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            total, steps, done = total + reward, steps + 1, terminated or truncated
        assert info["success"] and terminated and total == 1.0
        played.append(steps)
    assert played == lengths


def test_taking_a_distractor_loses_the_game():
    env = make("textworld-treasure", level=5, games=3)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step("take keycard")
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)


def test_cap_truncates_and_invalid_actions_are_named():
    env = make("textworld-treasure", level=5, games=3, horizon=2)
    env.reset(seed=0)
    assert env.step("look")[3] is False
    assert env.step("inventory")[3] is True
    with pytest.raises(ValueError, match="invalid action 'fly'; admissible actions are "
                                         "'examine keycard', 'go east'"):
        env.step("fly")


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown treasure hunter level 31; choose 1-30"):
        make("textworld-treasure", level=31)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        make("textworld-treasure", split="dev")
    with pytest.raises(ValueError, match="games must be >= 1"):
        make("textworld-treasure", games=0)
