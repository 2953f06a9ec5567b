"""TextWorld games made by TextWorld's own generators, played on its engine: the part the
TextWorld envs share (``textworld_cooking.py``, ``textworld_treasure.py``).

A game pool is a (level, split) pair: game ``i`` is generated and compiled (TextWorld's bundled
Inform 7) on first use, once, into ``$LLMRL_CACHE_DIR/<env>/``, with a seed fixed by (level,
split, i), so a pool is the same on every machine with the same TextWorld. ``reset`` draws a
game of the pool from the env's seed.

The observation is the engine's answer to the last command, the room's description and the
inventory; the admissible actions are the engine's admissible commands (sorted). The reward is
the engine's score change; success is the engine's "won", and a "lost" game ends the episode.
The expert is TextWorld's planner: the first of the commands it would play from the current
state (``policy_commands``).
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
from .base import TextEnv, text_observation_space

SPLITS = ("train", "valid", "test")
_SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    return _SPACES.sub(" ", text.replace(">", " ")).strip()


def game_seed(level: int, split: str, index: int) -> int:
    return 1_000_000 * SPLITS.index(split) + 10_000 * level + index


class TextWorldGames(TextEnv):
    """A game drawn from a pool of generated TextWorld games. Subclasses name the pool
    (``env_name``, ``generator_version``), their levels with step caps (``levels``), and
    implement ``make_game`` and ``instruction_of``."""

    action_count = "varies"
    env_name = ""
    #: the game kind in error messages ("cooking")
    kind = ""
    #: raise when a subclass's generation changes, so old pools are not reused
    generator_version = 1
    #: level -> step cap
    levels: dict[int, int] = {}
    #: the extra infos (``textworld.EnvInfos(extras=...)``) ``instruction_of`` reads
    extras: tuple[str, ...] = ()
    #: the infos besides the ones every game needs
    infos: tuple[str, ...] = ()

    def __init__(self, level: int, split: str = "train", games: int = 20,
                 horizon: int | None = None) -> None:
        if level not in self.levels:
            raise ValueError(f"unknown {self.kind} level {level!r}; choose "
                             f"{min(self.levels)}-{max(self.levels)}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose train, valid or test")
        if games < 1:
            raise ValueError(f"games must be >= 1, got {games}")
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.level, self.split, self.games = level, split, games
        self.horizon = horizon or self.levels[level]
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

    # -- the game pool --------------------------------------------------------------------
    @classmethod
    def make_game(cls, level: int, split: str, seed: int, options):
        """TextWorld's generator for this env: a ``textworld.Game`` (``options`` holds the
        seed and the output path)."""
        raise NotImplementedError

    def instruction_of(self, state) -> str:
        """The task sentence of the game just reset (``state``: the engine's first state)."""
        raise NotImplementedError

    @classmethod
    def pool_dir(cls, level: int, split: str) -> Path:
        return cache_dir() / cls.env_name / f"v{cls.generator_version}-level{level}-{split}"

    @classmethod
    def ensure_game(cls, level: int, split: str, index: int) -> Path:
        """The compiled game ``index`` of the (level, split) pool, generated on first use
        (atomically: another process may be making the same game)."""
        folder = cls.pool_dir(level, split) / f"game-{index:04d}"
        game_file = folder / "game.z8"
        if game_file.is_file():
            return game_file
        import textworld
        from textworld.generator.game import GameOptions

        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        seed = game_seed(level, split, index)
        options = GameOptions()
        options.seeds = seed
        options.path = str(tmp / "game.z8")
        game = cls.make_game(level, split, seed, options)
        textworld.generator.compile_game(game, options)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished it first
            shutil.rmtree(tmp, ignore_errors=True)
        return game_file

    # -- engine ---------------------------------------------------------------------------
    def _engine(self, index: int):
        if index not in self._engines:
            import textworld

            pool = self.pool_dir(self.level, self.split)
            if not pool.joinpath(f"game-{index:04d}").is_dir():
                print(f"llmrl: generating {self.env_name} game {index} (level {self.level}, "
                      f"{self.split}; a few seconds, once) under {pool}", file=sys.stderr)
            wanted = {name: True for name in self.infos}
            infos = textworld.EnvInfos(admissible_commands=True, policy_commands=True, won=True,
                                       lost=True, description=True, inventory=True, score=True,
                                       max_score=True, extras=list(self.extras), **wanted)
            game_file = str(self.ensure_game(self.level, self.split, index))
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
        self.instruction = self.instruction_of(self._state)
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
