"""ALFWorld's real text engine, as ALFWorld itself builds it.

``AlfredTWEnv`` (alfworld.agents.environment) finds the games (task type 1, solvable, under a
split directory) and builds the TextWorld gym env: TextWorld's PDDL backend behind ALFWorld's
wrappers (object-name demangling, game-file info, the handcoded expert's next action in
``infos["extra.expert_plan"]``) and TextWorld's step limit. With a batch of one the env runs
in this process. Nothing here imitates the engine; it only chooses which game file to play.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from ..paths import cache_dir

#: ALFWorld's name of task type 1, the paper's (alfred_tw_env.TASK_TYPES)
PICK_AND_PLACE = "pick_and_place_simple"
#: the banner the engine puts before the first observation
BANNER = "-= Welcome to TextWorld, ALFRED! =-\n\n"


def import_alfworld() -> None:
    """Import alfworld's engine modules, or explain how to install them.

    ``import alfworld`` creates ``$ALFWORLD_DATA`` (default ``~/.cache/alfworld``) and sets the
    variable for the whole process; we point it into llmrl's cache dir for that import and
    restore the user's setting afterwards.
    """
    before = os.environ.get("ALFWORLD_DATA")
    os.environ["ALFWORLD_DATA"] = before or str(cache_dir() / "alfworld-data")
    try:
        import alfworld.agents.environment.alfred_tw_env  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the ALFWorld engine is not installed ({exc}); run `make install` "
                        "(it installs alfworld==0.4.2)") from None
    finally:
        if before is None:
            os.environ.pop("ALFWORLD_DATA", None)
        else:
            os.environ["ALFWORLD_DATA"] = before


def _parser_modules() -> list:
    from textworld import logic
    from textworld.envs.pddl import textgen

    return [textgen, logic]


def memoize_text_parser() -> None:
    """Cache TextWorld's TatSu parses of grammar and logic strings (exact; the env's
    ``fast_text=False`` turns it off).

    TextWorld's PDDL backend describes every state by deriving text from ALFWorld's grammar;
    ``ContextSensitiveGrammar.derive`` and its conditional symbols re-parse the same template
    strings and logic queries with TatSu at every step, most of a step's time. A parse depends
    only on its string and rule, so the first one is kept and each call gets a deep copy
    (derivation mutates the symbols it gets). Observations are unchanged (tested).
    """
    for module in _parser_modules():
        if getattr(module._parse_and_convert, "memoized", False):
            continue
        original = module._parse_and_convert
        module._parse_and_convert = _memoized(original)


#: strings longer than this (game logic documents) are parsed as before: a deep copy of their
#: parse costs more than the parse, and a game's documents are parsed once per load
MEMO_MAX_CHARS = 2000


def _memoized(original):
    parsed: dict[tuple, object] = {}

    def parse_and_convert(text, rule_name=None, **kwargs):
        if len(text) > MEMO_MAX_CHARS:  # a whole logic document, parsed once per game load
            return original(text, rule_name=rule_name, **kwargs)
        key = (text, rule_name)
        if key not in parsed:
            parsed[key] = original(text, rule_name=rule_name, **kwargs)
        return copy.deepcopy(parsed[key])

    parse_and_convert.memoized = True
    parse_and_convert.original = original
    return parse_and_convert


def _expert_wording(command: str) -> str:
    """A put command as ALFWorld's handcoded expert parses it: "move X to Y" (0.4.2's
    grammar) as "put X in/on Y" (0.3.5's)."""
    if command.startswith("move ") and " to " in command:
        obj, recep = command[len("move "):].split(" to ", 1)
        return f"put {obj} in/on {recep}"
    return command


def teach_expert_the_move_command() -> None:
    """ALFWorld 0.4.2's handcoded expert tracks what it holds by the words of the command just
    played (handcoded_expert.py, ``update_state_tracking``): "take" adds the object, "put"
    removes it. 0.4.2's grammar calls the put command "move X to Y", so after a move the expert
    still believes it holds X and, when the game goes on (the second object of pick-two, an
    object put in the wrong place), plans from a wrong inventory (tests/test_alfworld_types.py
    runs that tracking code). The expert wrapper is told the command in the wording its
    tracking reads; the engine plays the command as given."""
    import_alfworld()
    from alfworld.agents.environment.alfred_tw_env import AlfredExpert

    if getattr(AlfredExpert.step, "move_taught", False):
        return
    original = AlfredExpert.step

    def step(self, command):  # AlfredExpert.step, with the expert's wording of the command
        self.state, reward, done = super(AlfredExpert, self).step(command)
        self.prev_command = _expert_wording(str(command))
        self._gather_infos()
        return self.state, reward, done

    step.move_taught, step.original = True, original
    AlfredExpert.step = step


def unmemoize_text_parser() -> None:
    """Restore TextWorld's own parsers (the paper's code path; the equality test)."""
    for module in _parser_modules():
        original = getattr(module._parse_and_convert, "original", None)
        if original is not None:
            module._parse_and_convert = original


def engine_config(data_path: Path, horizon: int,
                  task_types: tuple[str, ...] = (PICK_AND_PLACE,)) -> dict:
    """The part of ALFWorld's base_config.yaml that AlfredTWEnv reads for text games
    (``task_types`` by name, written as the ids of ALFWorld's own table)."""
    import_alfworld()
    from alfworld.agents.environment.alfred_tw_env import TASK_TYPES

    ids = {name: id_ for id_, name in TASK_TYPES.items()}
    path = str(data_path)
    return {
        "dataset": {"data_path": path, "eval_id_data_path": path, "eval_ood_data_path": path,
                    "num_train_games": -1, "num_eval_games": -1},
        "env": {"type": "AlfredTWEnv", "domain_randomization": False,
                "task_types": [ids[t] for t in task_types], "expert_type": "handcoded",
                "goal_desc_human_anns_prob": 0.0},
        # "dagger" training adds the handcoded expert to the wrappers (train_eval="train")
        "general": {"training_method": "dagger"},
        "dagger": {"training": {"max_nb_steps_per_episode": horizon}},
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """AlfredTWEnv prints progress and counts; keep them off the user's terminal."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def new_alfred_tw_env(data_path: Path, horizon: int,
                      task_types: tuple[str, ...] = (PICK_AND_PLACE,)):
    """ALFWorld's AlfredTWEnv over ``data_path``; it searches the games of ``task_types``
    when made."""
    teach_expert_the_move_command()
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    with _quiet():
        return AlfredTWEnv(engine_config(data_path, horizon, task_types), train_eval="train")


@functools.lru_cache(maxsize=16)
def alfred_tw_env(data_path: str, horizon: int, task_types: tuple[str, ...] = (PICK_AND_PLACE,)):
    """AlfredTWEnv over ``data_path``, made once per process, path, horizon and task types."""
    return new_alfred_tw_env(Path(data_path), horizon, task_types)


def collect_games(data_path: Path, horizon: int,
                  task_types: tuple[str, ...] = (PICK_AND_PLACE,)) -> list[str]:
    """The solvable game files of ``task_types`` AlfredTWEnv finds under ``data_path``,
    sorted."""
    return sorted(alfred_tw_env(str(data_path), horizon, task_types).game_files)


class Engine:
    """One in-process ALFWorld text env: ``tw.init_env(batch_size=1)`` of an AlfredTWEnv.

    ``reset(game)`` loads and starts that game file; ``step(command)`` plays one command. Both
    return ``(observation, infos)`` for the single game (infos: won, admissible_commands,
    extra.expert_plan, extra.gamefile; step adds done). ALFWorld's expert draws from Python's
    global ``random``; the engine keeps its own random state and swaps it in around each call,
    so its expert is reproducible and other code's random numbers are left alone.
    """

    def __init__(self, tw, seed: int = 0) -> None:
        with _quiet():
            self.gym = tw.init_env(batch_size=1)
        self._random_state = random.Random(seed).getstate()

    @contextlib.contextmanager
    def _own_random(self) -> Iterator[None]:
        outer = random.getstate()
        random.setstate(self._random_state)
        try:
            yield
        finally:
            self._random_state = random.getstate()
            random.setstate(outer)

    def reset(self, game_file: str, seed: int | None = None) -> tuple[str, dict]:
        if seed is not None:
            self._random_state = random.Random(seed).getstate()
        self.gym.gamefiles = [game_file]  # the pool the engine draws its next game from
        self.gym.seed(0)
        with self._own_random():
            obs, infos = self.gym.reset()
        return obs[0], {k: v[0] for k, v in infos.items()}

    def step(self, command: str) -> tuple[str, dict]:
        with self._own_random():
            obs, _, dones, infos = self.gym.step([command])
        infos = {k: v[0] for k, v in infos.items()}
        infos["done"] = bool(dones[0])
        return obs[0], infos


def expert_solves(game_file: Path, horizon: int) -> bool:
    """Whether ALFWorld's handcoded expert, played from the start, wins within ``horizon``."""
    tw = new_alfred_tw_env(game_file.parent, horizon)  # finds nothing: not yet solvable
    tw.game_files = [str(game_file)]
    engine = Engine(tw)
    _, infos = engine.reset(str(game_file))
    for _ in range(horizon):
        _, infos = engine.step(infos["extra.expert_plan"][0])
        if infos["won"] or infos["done"]:
            break
    return bool(infos["won"])
