"""ALFWorld's six task types (the ``alfworld`` env) on games llmrl generates, played by the
real engine and ALFWorld's handcoded expert."""

import pytest
from gymnasium.utils.env_checker import check_env

from llmrl_cli.envs import make
from llmrl_cli.envs.alfworld_engine import _expert_wording, teach_expert_the_move_command
from llmrl_cli.envs.alfworld_gen import TASK_TYPES, generate, task_pairs

GAMES = 2  # per type


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    """Two train games of each type in the official layout (about 30 s)."""
    root = tmp_path_factory.mktemp("alfworld-types")
    written = {short: generate(root, GAMES, seed=0, splits=("train",), task_type=long)["train"]
               for short, long in TASK_TYPES.items()}
    return root, written


def test_the_generator_writes_each_type_with_its_sentence(games):
    _, written = games
    names = {short: sorted(p.parent.parent.name.split("-")[0] for p in files)
             for short, files in written.items()}
    assert names == {short: [long] * GAMES for short, long in TASK_TYPES.items()}
    assert ("Mug", "CoffeeMachine") in task_pairs("pick_heat_then_place_in_recep")
    assert ("Apple", "Microwave") not in task_pairs("pick_heat_then_place_in_recep")
    assert all(r == "DeskLamp" for _, r in task_pairs("look_at_obj_in_light"))


@pytest.mark.parametrize("task_type", list(TASK_TYPES))
def test_the_expert_solves_every_game_of_each_type(games, task_type):
    root, _ = games
    env = make("alfworld", task_type=task_type, data=str(root))
    assert len(env.games) == GAMES
    for index in range(GAMES):
        env.reset(seed=index, options={"game": index})
        for _ in range(env.horizon):
            _, reward, terminated, truncated, info = env.step(env.expert_action())
            if terminated or truncated:
                break
        assert info["success"] and reward == 1.0, (task_type, env.task)


def test_all_types_together_checker_resets_and_bad_action(games):
    root, _ = games
    env = make("alfworld", data=str(root))
    assert len(env.games) == GAMES * 6
    check_env(env, skip_render_check=True)
    first = [env.reset(seed=s)[0]["text"] for s in range(4)]
    assert first == [env.reset(seed=s)[0]["text"] for s in range(4)]
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action 'fly'; admissible actions are"):
        env.step("fly")


def test_an_unknown_task_type_is_one_error():
    from llmrl_cli.errors import UserError

    with pytest.raises(UserError, match="unknown ALFWorld task type 'sweep'; choose one of: "
                                        "all, clean, cool, examine, heat, pick, pick-two"):
        make("alfworld", task_type="sweep")


def test_the_expert_is_told_the_move_command_as_put():
    """ALFWorld 0.4.2's expert removes an object from the inventory it tracks only after a
    command with "put" in it (handcoded_expert.py, ``update_state_tracking``), but the
    engine's put command reads "move X to Y": run on the expert's own tracking code, a move
    leaves the object in its inventory and the "put" wording removes it. The env's expert gets
    the second wording (``teach_expert_the_move_command``); with it the expert solves every
    pick-two game above."""
    teach_expert_the_move_command()
    from alfworld.agents.expert.handcoded_expert import BasePolicy

    assert _expert_wording("move book 2 to desk 1") == "put book 2 in/on desk 1"
    assert _expert_wording("take book 2 from desk 1") == "take book 2 from desk 1"
    inventories = []
    for command in ("move book 2 to desk 1", _expert_wording("move book 2 to desk 1")):
        policy = BasePolicy({"object_target": "book", "parent_target": "desk"})
        policy.inventory = ["book 2"]
        policy.update_state_tracking({"feedback": "You move the book 2 to the desk 1."}, command)
        inventories.append(policy.inventory)
    assert inventories == [["book 2"], []]
