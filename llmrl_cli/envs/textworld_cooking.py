"""TextWorld's cooking games (the First TextWorld Problems' kind) as text environments.

The games are made by TextWorld's own generator (``textworld.challenges.tw_cooking``, installed
with alfworld) and compiled with its bundled Inform 7, once, into ``$LLMRL_CACHE_DIR``: game
``i`` of a (level, split) pool is generated on first use with a seed fixed by (level, split, i),
so a pool is the same on every machine with the same TextWorld. ``split`` is TextWorld's: the
food items and their preparations of ``train``, ``valid`` or ``test``.

Levels (TextWorld's settings; ``drop`` stays off: its games leave TextWorld's planner without a
plan part-way): 1 = one ingredient, one room; 2 = one ingredient to cut, six rooms, closed doors
and containers; 3 = two ingredients to cut and cook, six rooms; 4 = three ingredients, nine rooms.

The observation is the engine's answer to the last command, the room's description and the
inventory; the admissible actions are the engine's admissible commands. The instruction states
the game's recipe (from its cookbook), so an episode needs no ``examine cookbook``. The reward is
the engine's score change (one point per quest step); success is the engine's "won". The expert
is TextWorld's planner: the first of the commands it would play from the current state
(``policy_commands``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from gymnasium import spaces

from ..paths import cache_dir
from .base import TextEnv, llmrl_preset, text_observation_space

#: level -> TextWorld's cooking settings and the step cap
LEVELS: dict[int, tuple[dict[str, Any], int]] = {
    1: ({"recipe": 1, "take": 1, "go": 1, "open": False, "cook": False, "cut": False}, 20),
    2: ({"recipe": 1, "take": 1, "go": 6, "open": True, "cook": False, "cut": True}, 40),
    3: ({"recipe": 2, "take": 2, "go": 6, "open": True, "cook": True, "cut": True}, 60),
    4: ({"recipe": 3, "take": 3, "go": 9, "open": True, "cook": True, "cut": True}, 100),
}
SPLITS = ("train", "valid", "test")
GENERATOR_VERSION = 1  # raise when the generation below changes, so old pools are not reused
_SPACES = re.compile(r"\s+")


def game_seed(level: int, split: str, index: int) -> int:
    return 1_000_000 * SPLITS.index(split) + 10_000 * level + index


def pool_dir(level: int, split: str) -> Path:
    return cache_dir() / "textworld-cooking" / f"v{GENERATOR_VERSION}-level{level}-{split}"


def ensure_game(level: int, split: str, index: int) -> Path:
    """The compiled game ``index`` of the (level, split) pool, generated on first use
    (atomically: another process may be making the same game)."""
    folder = pool_dir(level, split) / f"game-{index:04d}"
    game_file = folder / "game.z8"
    if game_file.is_file():
        return game_file
    import textworld
    from textworld.challenges.tw_cooking import cooking
    from textworld.generator.game import GameOptions

    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seed = game_seed(level, split, index)
    options = GameOptions()
    options.seeds = seed
    options.path = str(tmp / "game.z8")
    settings = {**LEVELS[level][0], "drop": False, "recipe_seed": seed, "split": split}
    game = cooking.make(settings, options)
    textworld.generator.compile_game(game, options)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished it first
        shutil.rmtree(tmp, ignore_errors=True)
    return game_file


def recipe_sentence(recipe: str) -> str:
    """'Ingredients: red potato. Directions: dice the red potato; fry the red potato; prepare
    meal.' from the cookbook's text."""
    lines = [line.strip() for line in recipe.splitlines()]
    ingredients = lines[lines.index("Ingredients:") + 1:lines.index("Directions:")]
    directions = lines[lines.index("Directions:") + 1:]
    return (f"Ingredients: {', '.join(i for i in ingredients if i)}. "
            f"Directions: {'; '.join(d for d in directions if d)}.")


def clean(text: str) -> str:
    return _SPACES.sub(" ", text.replace(">", " ")).strip()


class TextWorldCooking(TextEnv):
    """A TextWorld cooking game. Options: ``level`` (1-4), ``split`` (train, valid, test),
    ``games`` (pool size), ``horizon`` (step cap; default the level's)."""

    action_count = "varies"
    question = "To cook and eat the meal, what action should you take next?"
    # TextWorld is not in the paper; the Q-network is told the recipe, which changes from game
    # to game.
    preset = llmrl_preset(episodes=300)

    def __init__(self, level: int = 2, split: str = "train", games: int = 20,
                 horizon: int | None = None) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown cooking level {level!r}; choose 1, 2, 3 or 4")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose train, valid or test")
        if games < 1:
            raise ValueError(f"games must be >= 1, got {games}")
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.level, self.split, self.games = level, split, games
        self.horizon = horizon or LEVELS[level][1]
        self.observation_space = text_observation_space()
        # the admissible commands change from state to state; _obs sets the current count
        self.action_space = spaces.Discrete(1)
        self.instruction = ""
        self.game_index = -1
        self._engines: dict[int, Any] = {}  # game index -> its started TextWorld env
        self._state = None
        self._steps = 0

    @property
    def feature_task(self) -> str:
        return self.instruction

    # -- engine ---------------------------------------------------------------------------
    def _engine(self, index: int):
        if index not in self._engines:
            import textworld

            if not pool_dir(self.level, self.split).joinpath(f"game-{index:04d}").is_dir():
                print(f"llmrl: generating TextWorld cooking game {index} (level {self.level}, "
                      f"{self.split}; a few seconds, once) under {pool_dir(self.level, self.split)}",
                      file=sys.stderr)
            infos = textworld.EnvInfos(admissible_commands=True, policy_commands=True, won=True,
                                       lost=True, description=True, inventory=True, score=True,
                                       max_score=True, extras=["recipe"])
            game_file = str(ensure_game(self.level, self.split, index))
            with warnings.catch_warnings():  # jericho: "not fully supported" (TextWorld scores)
                warnings.simplefilter("ignore")
                self._engines[index] = textworld.start(game_file, request_infos=infos)
        return self._engines[index]

    def _text(self, feedback: str | None) -> str:
        parts = [clean(self._state.description), clean(self._state.inventory)]
        if feedback is not None and clean(feedback) != parts[0]:
            parts.insert(0, clean(feedback))
        return " ".join(parts)

    def _obs(self, feedback: str | None) -> dict:
        actions = self.admissible_actions()
        self.action_space = spaces.Discrete(len(actions))
        return {"text": self._text(feedback), "actions": actions}

    def admissible_actions(self) -> list[str]:
        return sorted(self._state.admissible_commands)

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.game_index = int(self.np_random.integers(self.games))
        self._state = self._engine(self.game_index).reset()
        self.instruction = ("Your task is to cook the meal of this recipe and eat it. "
                            + recipe_sentence(self._state["extra.recipe"]))
        self._steps = 0
        return self._obs(None), {"success": False, "game": self.game_index}

    def step(self, action: Any):
        command = self.admissible_actions()[self.resolve_action(action)]
        score = self._state.score
        self._state, _, _ = self._engine(self.game_index).step(command)
        self._steps += 1
        success = bool(self._state.won)
        terminated = success or bool(self._state.lost)
        truncated = not terminated and self._steps >= self.horizon
        reward = float(self._state.score - score)
        return (self._obs(self._state.feedback), reward, terminated, truncated,
                {"success": success, "game": self.game_index})

    def render(self) -> str:
        return f"{self.instruction} {self._text(None)}"

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    # -- expert ---------------------------------------------------------------------------
    def optimal_actions(self) -> list[str]:
        """The planner's next command; every command when it has no plan (a lost game)."""
        plan = self._state.policy_commands or []
        if plan and plan[0] in self._state.admissible_commands:
            return [plan[0]]
        return self.admissible_actions()
