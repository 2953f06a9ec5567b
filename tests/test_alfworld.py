"""ALFWorld Pick & Place on the real engine (alfworld 0.4.2: AlfredTWEnv, TextWorld, expert).

Every game here is played by the installed engine; nothing imitates its dynamics. A small game
set is generated once per session (about 15 s); the hand-written game is a literal PDDL problem
in the official layout.
"""

import json
import random
import textwrap

import pytest

from llmrl_cli.envs import make
from llmrl_cli.envs.alfworld import PAPER_TRAIN_TASKS, task_of
from llmrl_cli.envs.alfworld_engine import collect_games
from llmrl_cli.envs.alfworld_gen import (
    SPLIT_DIRS, TRAIN_PAIRS, UNSEEN_PAIRS, generate, logic_files, make_game, rooms_for)
from llmrl_cli.errors import UserError
from llmrl_cli.priors.prompts import build_prompt


@pytest.fixture(scope="session")
def games(tmp_path_factory):
    """Two generated games per split: (root, {split: [game files]})."""
    root = tmp_path_factory.mktemp("alfworld-games")
    return root, generate(root, 2, seed=0)


def test_generated_games_are_in_the_official_layout_and_found_by_alfredtwenv(games):
    root, written = games
    for split, files in written.items():
        split_dir = root / "json_2.1.1" / SPLIT_DIRS[split]
        assert collect_games(split_dir, 61) == sorted(str(f) for f in files)  # AlfredTWEnv
        for game_file in files:
            assert game_file.parent.parent.name.startswith("pick_and_place_simple-")
            game = json.loads(game_file.read_text())
            assert set(game) >= {"pddl_domain", "grammar", "pddl_problem", "solvable"}
            assert game["solvable"] is True and "UNKNOWN GOAL" not in game["grammar"]
            traj = json.loads((game_file.parent / "traj_data.json").read_text())
            assert traj["task_type"] == "pick_and_place_simple"
            target = traj["pddl_params"]["object_target"]
            assert f"-{target}-None-" in game_file.parent.parent.name
            assert traj["turk_annotations"]["anns"][0]["task_desc"]
    assert all(task_of(str(f)) in PAPER_TRAIN_TASKS for f in written["train"])


@pytest.mark.parametrize("split", ["train", "unseen"])
def test_the_engine_expert_solves_every_generated_game(games, split):
    root, written = games
    env = make("alfworld-pick", split=split, data=root)
    assert env.games == sorted(str(f) for f in written[split])
    for i in range(len(env.games)):
        obs, _ = env.reset(seed=0, options={"game": i})
        assert obs["text"].startswith("You are in the middle of a room.")
        assert env.task in env.instruction
        for _ in range(env.horizon):
            obs, reward, terminated, truncated, info = env.step(env.optimal_actions()[0])
            if terminated or truncated:
                break
        assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_split_and_generation_are_fixed_by_the_seed():
    constants = pytest.importorskip("alfworld.gen.constants")
    assert not set(TRAIN_PAIRS) & set(UNSEEN_PAIRS)
    for obj, recep in TRAIN_PAIRS + UNSEEN_PAIRS:
        assert rooms_for(obj, recep) and obj in constants.VAL_RECEPTACLE_OBJECTS[recep]
    a = make_game("Candle", "Toilet", random.Random(7))
    assert a == make_game("Candle", "Toilet", random.Random(7))
    assert a != make_game("Candle", "Toilet", random.Random(8))
    assert "(openable " in "".join(
        make_game("CellPhone", "Drawer", random.Random(s)).problem for s in range(5))


# A hand-written game in the official layout: a toilet, a countertop with a candle on it
# (ids in ALFRED's mangled form: "Candle|1" is written Candle_bar_1).
PROBLEM = textwrap.dedent("""\
    (define (problem plan_handwritten)
    (:domain alfred)
    (:objects
        agent1 - agent
        CandleType - otype
        ToiletType - rtype
        CounterTopType - rtype
        Candle_bar_1 - object
        Toilet_bar_1 - receptacle
        CounterTop_bar_1 - receptacle
        loc_bar_1 - location
        loc_bar_2 - location
        loc_bar_0 - location
    )
    (:init
        (receptacleType Toilet_bar_1 ToiletType)
        (receptacleType CounterTop_bar_1 CounterTopType)
        (objectType Candle_bar_1 CandleType)
        (canContain ToiletType CandleType)
        (canContain CounterTopType CandleType)
        (pickupable Candle_bar_1)
        (atLocation agent1 loc_bar_0)
        (inReceptacle Candle_bar_1 CounterTop_bar_1)
        (receptacleAtLocation Toilet_bar_1 loc_bar_1)
        (receptacleAtLocation CounterTop_bar_1 loc_bar_2)
        (objectAtLocation Candle_bar_1 loc_bar_2)
    )
    (:goal (exists (?r - receptacle) (exists (?o - object) (and (inReceptacle ?o ?r)
        (objectType ?o CandleType) (receptacleType ?r ToiletType)))))
    )
    """)


def _write_trial(root, task_dir, task_type, solvable=True):
    trial = root / "json_2.1.1" / "train" / task_dir / "trial_T20190909_000000_000001"
    trial.mkdir(parents=True)
    traj = {"task_type": task_type, "turk_annotations": {"anns": [{"task_desc": "x"}]},
            "pddl_params": {"object_target": "Candle", "parent_target": "Toilet",
                            "toggle_target": "", "mrecep_target": "", "object_sliced": False}}
    (trial / "traj_data.json").write_text(json.dumps(traj))
    domain, grammar = logic_files()
    game = {"pddl_domain": domain, "pddl_problem": PROBLEM, "solvable": solvable,
            "grammar": grammar.replace("UNKNOWN GOAL", "put a candle in toilet")}
    (trial / "game.tw-pddl").write_text(json.dumps(game))
    return trial / "game.tw-pddl"


@pytest.fixture
def official(tmp_path, monkeypatch):
    """$ALFWORLD_DATA with one playable game, one of another task type, one unsolvable."""
    game = _write_trial(tmp_path, "pick_and_place_simple-Candle-None-Toilet-401",
                        "pick_and_place_simple")
    _write_trial(tmp_path, "look_at_obj_in_light-Candle-None-DeskLamp-401",
                 "look_at_obj_in_light")
    _write_trial(tmp_path, "pick_and_place_simple-Candle-None-Toilet-402",
                 "pick_and_place_simple", solvable=False)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    return game


def test_a_handwritten_official_game_is_found_and_played(official):
    env = make("alfworld-pick")  # from $ALFWORLD_DATA
    assert env.games == [str(official)]
    obs, info = env.reset(seed=0)
    assert info["task"] == "put a candle in toilet." and env.feature_task.startswith("Task: ")
    assert obs["text"] == ("You are in the middle of a room. Looking quickly around you, you see "
                           "a countertop 1, and a toilet 1.\n\nYour task is to: put a candle in "
                           "toilet.")
    assert obs["actions"] == ["go to countertop 1", "go to toilet 1", "inventory", "look"]
    assert env.optimal_actions() == ["look"]  # ALFWorld's expert always looks first
    for action in ("go to countertop 1", "take candle 1 from countertop 1", "go to toilet 1"):
        obs, reward, terminated, truncated, _ = env.step(action)
        assert (reward, terminated, truncated) == (0.0, False, False)
    assert "put candle 1 in/on toilet 1" in obs["actions"]  # the paper's (0.3.5) wording
    obs, reward, terminated, truncated, info = env.step("put candle 1 in/on toilet 1")
    assert obs["text"] == "You put the candle 1 in/on the toilet 1."
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)


def test_current_alfworld_wording(official):
    env = make("alfworld-pick", wording="alfworld")
    env.reset(seed=0)
    for action in ("go to countertop 1", "take candle 1 from countertop 1", "go to toilet 1"):
        obs, *_ = env.step(action)
    assert "move candle 1 to toilet 1" in obs["actions"] and "help" in obs["actions"]
    obs, reward, *_ = env.step("move candle 1 to toilet 1")
    assert (obs["text"], reward) == ("You move the candle 1 to the toilet 1.", 1.0)


def test_invalid_commands_and_the_step_limit(official):
    env = make("alfworld-pick", horizon=3)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="admissible actions are"):
        env.step("fly to the moon")
    obs, reward, terminated, truncated, _ = env.command("fly to the moon")
    assert (obs["text"], reward, terminated, truncated) == ("Nothing happens.", 0.0, False, False)
    assert "look" in obs["actions"]
    obs, reward, terminated, truncated, _ = env.step("go to countertop 1")
    assert not (terminated or truncated)
    obs, reward, terminated, truncated, info = env.step("look")  # the third step: cut
    assert (reward, terminated, truncated, info["success"]) == (0.0, False, True, False)


def test_resets_are_reproducible(games):
    root, _ = games
    a, b = make("alfworld-pick", data=root), make("alfworld-pick", data=root)
    runs = []
    for env in (a, b):
        obs, info = env.reset(seed=5)
        path = [env.optimal_actions()[0]]
        for _ in range(4):
            obs, *_ = env.step(path[-1])
            path.append(env.optimal_actions()[0])
        runs.append((info["gamefile"], env.instruction, obs["text"], path))
    assert runs[0] == runs[1]


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown ALFWorld split"):
        make("alfworld-pick", split="valid")
    with pytest.raises(UserError, match="no ALFWorld games at"):
        make("alfworld-pick", data=tmp_path)


def test_the_prompt_lists_the_allowed_actions_as_llf_bench_does():
    prompt = build_prompt("alfworld-pick", "Your task is to: put a candle in toilet.",
                          "You arrive at toilet 1.", ["go to toilet 1", "look"])
    assert ("Current Observation: You arrive at toilet 1. You are allowed to take the following "
            "actions: ['go to toilet 1', 'look'].") in prompt


def test_generate_command_rejects_bad_input(tmp_path, capsys):
    from llmrl_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["alfworld", "generate", "--out", str(tmp_path), "--n", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("llmrl: error: --n and --horizon must be >= 1")


@pytest.mark.slow
def test_dqn_prior_with_the_expert_runs_end_to_end(games, tmp_path):
    from llmrl_cli.config import build_config
    from llmrl_cli.runner import Runner

    root, _ = games
    cfg = build_config(env="alfworld-pick", algo="dqn-prior", prior="expert-mix:0.5",
                       episodes=2, out=str(tmp_path), device="cpu",
                       agent={"eval_episodes": 2, "train_start": 0, "train_every": 1})
    cfg.env_kwargs = {"data": str(root), "horizon": 8}
    csv = Runner(cfg, log=lambda msg: None).run()
    rows = csv.read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("env,algo")


def test_the_parse_cache_changes_no_observation(games):
    """fast_text (default) caches TextWorld's parses: the same game and actions give the same
    texts, admissible actions, rewards and expert actions as TextWorld's own parser."""
    import random

    from textworld.envs.pddl import textgen

    root, _ = games
    played = []
    for fast in (False, True):
        env = make("alfworld-pick", data=root, fast_text=fast)
        assert getattr(textgen._parse_and_convert, "memoized", False) is fast
        rng = random.Random(3)
        obs, _ = env.reset(seed=1)
        trace = [(obs["text"], tuple(obs["actions"]))]
        for step in range(12):  # random moves, then the expert's: opening, taking, putting
            action = rng.choice(obs["actions"]) if step < 6 else env.optimal_actions()[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            trace.append((obs["text"], tuple(obs["actions"]), reward, terminated, truncated,
                          tuple(env.optimal_actions())))
            if terminated or truncated:
                break
        played.append(trace)
    assert played[0] == played[1] and len(played[0]) > 6
