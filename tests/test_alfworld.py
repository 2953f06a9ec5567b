"""ALFWorld Pick & Place on the real engine (alfworld 0.4.2: AlfredTWEnv, TextWorld, expert).

Every game here is played by the installed engine; nothing imitates its dynamics. A small game
set is generated once per session (about 15 s); the hand-written game is a literal PDDL problem
in the official layout.
"""

import contextlib
import io
import json
import random
import re
import textwrap

import pytest

from llmrl_cli.envs import make
from llmrl_cli.envs.alfworld import (PAPER_TRAIN_TASKS, llf_observation, paper_prompt,
                                     paper_schedule, task_of)
from llmrl_cli.envs.alfworld_engine import collect_games, engine_config, import_alfworld
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
    # every combination has a place to start from in every room it is drawn in, whatever
    # the random receptacle counts (seed 0's train game 48 once drew a bedroom without one)
    for obj, recep in TRAIN_PAIRS + UNSEEN_PAIRS:
        for s in range(40):
            problem = make_game(obj, recep, random.Random(s)).problem
            assert f"(objectType {obj}_bar_" in problem


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


def _write_trial(root, task_dir, task_type, solvable=True, task="put a candle in toilet"):
    trial = root / "json_2.1.1" / "train" / task_dir / "trial_T20190909_000000_000001"
    trial.mkdir(parents=True)
    traj = {"task_type": task_type, "turk_annotations": {"anns": [{"task_desc": "x"}]},
            "pddl_params": {"object_target": "Candle", "parent_target": "Toilet",
                            "toggle_target": "", "mrecep_target": "", "object_sliced": False}}
    (trial / "traj_data.json").write_text(json.dumps(traj))
    domain, grammar = logic_files()
    game = {"pddl_domain": domain, "pddl_problem": PROBLEM, "solvable": solvable,
            "grammar": grammar.replace("UNKNOWN GOAL", task)}
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
    with pytest.raises(UserError, match="unknown ALFWorld protocol 'llf'"):
        make("alfworld-pick", protocol="llf")
    with pytest.raises(UserError, match="pool must be >= 0"):
        make("alfworld-pick", pool=-1)


def test_the_prior_prompts_in_the_papers_alfworld_layout():
    prompt = build_prompt("alfworld-pick", "Your task is to: put a candle in toilet.",
                          "You arrive at toilet 1.", ["go to toilet 1", "look"])
    assert prompt == paper_prompt("put a candle in toilet.", "You arrive at toilet 1.",
                                  ["go to toilet 1", "look"])
    assert prompt == ("Task: Your task is to: put a candle in toilet.\nCurrent observation:You "
                      "arrive at toilet 1.. You are allowed to take the following actions: go to "
                      "toilet 1, look.\nPlease select an action from the admissible actions. \n "
                      "Action:")


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
    # tasks=all: the paper protocol schedules the two generated games' task strings
    cfg.env_kwargs = {"data": str(root), "horizon": 8, "tasks": "all"}
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


# -- the paper's protocol (train_alfworld.py) ------------------------------------------------

FIRST_STATE = ("You are in the middle of a room. Looking quickly around you, you see a "
               "countertop 1, and a toilet 1.\n\nYour task is to: put a candle in toilet.")


def test_the_paper_prompt_byte_for_byte(official):
    env = make("alfworld-pick")
    obs, _ = env.reset(seed=0)
    assert obs["text"] == FIRST_STATE
    assert llf_observation(obs["text"], obs["actions"]) == (
        FIRST_STATE + ". You are allowed to take the following actions: go to countertop 1, go "
        "to toilet 1, inventory, look.")
    assert paper_prompt(env.task, obs["text"], obs["actions"]) == (
        "Task: Your task is to: put a candle in toilet.\nCurrent observation:You are in the "
        "middle of a room. Looking quickly around you, you see a countertop 1, and a toilet 1."
        "\n\nYour task is to: put a candle in toilet.. You are allowed to take the following "
        "actions: go to countertop 1, go to toilet 1, inventory, look.\nPlease select an action "
        "from the admissible actions. \n Action:")


def test_the_paper_prompt_of_a_generated_game(games):
    root, _ = games
    env = make("alfworld-pick", data=root)
    obs, _ = env.reset(seed=0, options={"task": "put some cellphone on armchair."})
    assert paper_prompt(env.task, obs["text"], obs["actions"]) == (
        "Task: Your task is to: put some cellphone on armchair.\nCurrent observation:You are in "
        "the middle of a room. Looking quickly around you, you see a armchair 1, a coffeetable "
        "1, a drawer 2, a drawer 1, a dresser 1, a garbagecan 1, a sidetable 2, a sidetable 1, "
        "and a sofa 1.\n\nYour task is to: put some cellphone on armchair.. You are allowed to "
        "take the following actions: go to armchair 1, go to coffeetable 1, go to drawer 1, go "
        "to drawer 2, go to dresser 1, go to garbagecan 1, go to sidetable 1, go to sidetable 2, "
        "go to sofa 1, inventory, look.\nPlease select an action from the admissible actions. "
        "\n Action:")


def test_the_paper_training_schedule(games):
    """Pass 0 plays the 26 strings in list order; every later pass is a reshuffle of them,
    fixed by (run seed, pass)."""
    assert len(set(PAPER_TRAIN_TASKS)) == 26
    train = [paper_schedule(PAPER_TRAIN_TASKS, n, 0) for n in range(78)]
    assert train[:26] == list(PAPER_TRAIN_TASKS)
    for p in (1, 2):
        this_pass = train[26 * p: 26 * (p + 1)]
        assert sorted(this_pass) == sorted(PAPER_TRAIN_TASKS)
        assert this_pass != train[26 * (p - 1): 26 * p]
    assert train[26:30] == ["put some spraybottle on toilet.", "put a cellphone in drawer.",
                            "put a cd in dresser.", "put a spraybottle in countertop."]
    # a function of (index, run seed) only: any env, any call order
    assert [paper_schedule(PAPER_TRAIN_TASKS, n, 0) for n in reversed(range(78))] == train[::-1]
    other = [paper_schedule(PAPER_TRAIN_TASKS, n, 1) for n in range(52)]
    assert other[:26] == train[:26] and other[26:] != train[26:52]
    assert other[26:30] == ["put some soapbottle on cart.", "put a candle in sidetable.",
                            "put a cellphone in drawer.", "put a cloth in toilet."]


def test_the_paper_evaluation_plays_each_string_in_list_order(games, capsys):
    """...of the paper's strings the pool has games for (this small set has two); a note
    names the others."""
    root, _ = games
    env = make("alfworld-pick", data=root)
    assert "24 of the paper's 26 ALFWorld task strings have no game" in capsys.readouterr().err
    present = tuple(t for t in PAPER_TRAIN_TASKS if t in env.game_tasks)
    assert env.protocol == "paper" and env.task_strings == present and len(present) == 2
    plays = [env.episode_options("eval", i, 5)["task"] for i in range(3)]
    assert plays == [*present, present[0]]
    train = [env.episode_options("train", n, 0)["task"] for n in range(4)]
    assert train == [paper_schedule(present, n, 0) for n in range(4)]
    with pytest.raises(UserError, match="unknown episode kind 'test'"):
        env.episode_options("test", 0, 0)


def test_other_task_sets_schedule_their_own_sorted_strings(games):
    root, _ = games
    unseen = make("alfworld-pick", data=root, split="unseen")
    assert unseen.task_strings == ("put a creditcard in dresser.", "put some keychain on safe.")
    assert unseen.episode_options("eval", 3, 0) == {"task": "put some keychain on safe."}
    every = make("alfworld-pick", data=root, tasks="all")
    assert every.task_strings == ("put some candle on sidetable.",
                                  "put some cellphone on armchair.")


def test_a_task_option_picks_a_game_with_that_task(games):
    root, _ = games
    env = make("alfworld-pick", data=root)
    assert env.game_tasks == ["put some candle on sidetable.", "put some cellphone on armchair."]
    for task in env.game_tasks:
        for seed in (0, 1, 2):
            obs, info = env.reset(seed=seed, options={"task": task})
            assert info["task"] == env.task == task == task_of(info["gamefile"])
            assert obs["text"].endswith(f"Your task is to: {task}")
    with pytest.raises(UserError, match=re.escape("the task string 'put a fork in drawer.'")):
        env.reset(seed=0, options={"task": "put a fork in drawer."})
    with pytest.raises(UserError, match="a task or a game, not both"):
        env.reset(seed=0, options={"task": env.game_tasks[0], "game": 0})


def test_the_random_protocol_is_unchanged(games):
    """protocol="random": no episode options, and each reset picks a game uniformly with its
    seed, as before the paper's protocol existed."""
    root, _ = games
    env = make("alfworld-pick", data=root, protocol="random")
    assert env.episode_options("train", 0, 0) is None
    assert env.episode_options("eval", 0, 0) is None
    for seed in range(6):
        _, info = env.reset(seed=seed)
        assert info["gamefile"] == env.games[random.Random(seed).randrange(len(env.games))]


def _alfworlds_first(split_dir, n):
    """The train games ALFWorld's own AlfredTWEnv keeps with num_train_games=n, in its order."""
    import_alfworld()
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    config = engine_config(split_dir, 61)
    config["dataset"]["num_train_games"] = n
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return AlfredTWEnv(config, train_eval="train").game_files


def test_the_pool_keeps_the_first_games_in_sorted_order_before_the_task_filter(tmp_path,
                                                                              monkeypatch):
    tasks = {"Toilet-401": "put a candle in toilet", "Toilet-402": "put some candle on toilet",
             "Cart-403": "put a candle in cart", "SideTable-404": "put a candle in sidetable"}
    for name, task in tasks.items():
        _write_trial(tmp_path, f"pick_and_place_simple-Candle-None-{name}",
                     "pick_and_place_simple", task=task)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    split_dir = tmp_path / "json_2.1.1" / "train"
    every = _alfworlds_first(split_dir, 0)  # the games ALFWorld finds (its order: os.walk)
    first = sorted(every)[:2]  # the pool: the first 2 in sorted order, on every machine
    assert make("alfworld-pick", pool=2, tasks="all").games == first
    assert make("alfworld-pick", pool=2).games == [
        g for g in first if task_of(g) in PAPER_TRAIN_TASKS]
    assert len(make("alfworld-pick", pool=0, tasks="all").games) == 4
    assert [task_of(g) for g in make("alfworld-pick", pool=0).games] == [
        "put a candle in sidetable.", "put a candle in toilet.", "put some candle on toilet."]


def test_the_pool_leaves_generated_sets_whole(games, monkeypatch):
    root, written = games
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setattr("llmrl_cli.envs.alfworld.ensure_default_games", lambda **_: root)
    assert make("alfworld-pick", pool=1).games == sorted(str(f) for f in written["train"])
