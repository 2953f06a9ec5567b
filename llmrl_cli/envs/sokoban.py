"""Sokoban in words, on the levels of ``gym_sokoban``'s generator (as RAGEN and verl-agent use).

A level comes from ``gym_sokoban.envs.room_utils.generate_room``: a random room topology, boxes
placed on their targets, then played backwards (pulls) so that every level is solvable. The
moves and rewards are ``gym_sokoban``'s ``SokobanEnv``'s: ``up``, ``down``, ``left``, ``right``
move the player, pushing a box when one is in the way and the cell behind it is free; each step
costs 0.1, a box pushed onto a target gives +1, off a target -1, the last box +10. The package's
env classes need the pre-gymnasium ``gym`` and its ``__init__`` needs ``pkg_resources`` (gone
from setuptools 81), so llmrl loads the generator module alone and applies those rules itself.

The expert is an exact breadth-first solver over (player, boxes) states: ``optimal_actions`` is
every move that begins a shortest solution.
"""

from __future__ import annotations

import importlib.util
import random
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from .base import TextEnv, llmrl_preset, text_observation_space

ACTIONS = ("up", "down", "left", "right")
_DELTAS = ((-1, 0), (1, 0), (0, -1), (0, 1))
STEP_REWARD, BOX_ON, BOX_OFF, SOLVED = -0.1, 1.0, -1.0, 10.0
WALL, FLOOR, TARGET = 0, 1, 2  # gym_sokoban's fixed-room codes
SOLVER_LIMIT = 200_000  # states the solver may visit before it gives up (no plan)


@lru_cache(maxsize=1)
def generator():
    """``gym_sokoban.envs.room_utils``, loaded without the package's ``__init__``."""
    spec = importlib.util.find_spec("gym_sokoban")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("sokoban needs the gym_sokoban package (make install installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "envs" / "room_utils.py"
    module_spec = importlib.util.spec_from_file_location("gym_sokoban_room_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def generate_level(dim: int, boxes: int, seed: int) -> tuple[np.ndarray, tuple, frozenset]:
    """(fixed room: wall, floor, target; player (row, col); box cells) of the level ``seed``.
    The generator draws from Python's and numpy's global generators: they are seeded here and
    given back their state afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        for attempt in range(100):
            random.seed(seed * 1000 + attempt)
            np.random.seed((seed * 1000 + attempt) % 2**32)
            try:
                fixed, state, _ = generator().generate_room(
                    dim=(dim, dim), num_steps=int(1.7 * 2 * dim), num_boxes=boxes)
            except (RuntimeError, RuntimeWarning):  # no level with a box moved: draw again
                continue
            player = tuple(int(v) for v in np.argwhere(state == 5)[0])
            box_cells = frozenset(tuple(int(v) for v in cell)
                                  for cell in np.argwhere((state == 3) | (state == 4)))
            return fixed.astype(int), player, box_cells
        raise RuntimeError(f"no Sokoban level for seed {seed} in 100 draws")
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def move(fixed: np.ndarray, player: tuple, boxes: frozenset, action: int
         ) -> tuple[tuple, frozenset]:
    """The player and boxes after ``action`` (unchanged when the move is blocked)."""
    dr, dc = _DELTAS[action]
    ahead = (player[0] + dr, player[1] + dc)
    if fixed[ahead] == WALL:
        return player, boxes
    if ahead in boxes:
        beyond = (ahead[0] + dr, ahead[1] + dc)
        inside = 0 <= beyond[0] < fixed.shape[0] and 0 <= beyond[1] < fixed.shape[1]
        if not inside or fixed[beyond] == WALL or beyond in boxes:
            return player, boxes
        return ahead, (boxes - {ahead}) | {beyond}
    return ahead, boxes


def solution_lengths(fixed: np.ndarray, player: tuple, boxes: frozenset) -> dict[int, int]:
    """action -> length of the shortest solution that starts with it (solvable starts only)."""
    targets = frozenset(tuple(int(v) for v in c) for c in np.argwhere(fixed == TARGET))
    lengths = {}
    for action in range(len(ACTIONS)):
        start = move(fixed, player, boxes, action)
        if start == (player, boxes):
            continue  # a blocked move wastes a step
        seen, frontier, depth = {start}, deque([(start, 1)]), None
        while frontier and len(seen) < SOLVER_LIMIT:
            (p, b), d = frontier.popleft()
            if b <= targets:
                depth = d
                break
            for a in range(len(ACTIONS)):
                nxt = move(fixed, p, b, a)
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append((nxt, d + 1))
        if depth is not None:
            lengths[action] = depth
    return lengths


class SokobanText(TextEnv):
    """Sokoban on a ``dim`` x ``dim`` generated level with ``boxes`` boxes. Options: ``dim``
    (default 6, RAGEN's), ``boxes`` (1), ``horizon`` (100, RAGEN's ``max_steps``) and
    ``min_moves`` (4, llmrl's: the generator's levels are often solved in one or two moves,
    so those shorter than this are drawn again; 1 keeps every level)."""

    action_count = "4"
    question = "To push every box onto a target, what action should you take next?"
    preset = llmrl_preset(episodes=500)

    def __init__(self, dim: int = 6, boxes: int = 1, horizon: int = 100,
                 min_moves: int = 4) -> None:
        if not 5 <= dim <= 12:
            raise ValueError(f"dim must be between 5 and 12, got {dim}")
        if not 1 <= boxes <= 3:
            raise ValueError(f"boxes must be 1, 2 or 3, got {boxes}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if min_moves < 1:
            raise ValueError(f"min_moves must be >= 1, got {min_moves}")
        self.dim, self.boxes_count, self.horizon = dim, boxes, horizon
        self.min_moves = min_moves
        self.instruction = ("Your task is to push every box onto a target. You push a box by "
                            "walking into it; the cell behind it must be free. A box cannot be "
                            "pulled.")
        self.observation_space = text_observation_space()
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.fixed = np.zeros((dim, dim), dtype=int)
        self.player: tuple = (0, 0)
        self.boxes: frozenset = frozenset()
        self._steps = 0
        self._plans: dict = {}

    # -- text -----------------------------------------------------------------------------
    def grid(self) -> list[str]:
        """Rows of the map: # wall, _ floor, O target, X box, * box on a target, P player,
        + player on a target."""
        rows = []
        for r in range(self.dim):
            row = ""
            for c in range(self.dim):
                on_target = self.fixed[r, c] == TARGET
                if (r, c) == self.player:
                    row += "+" if on_target else "P"
                elif (r, c) in self.boxes:
                    row += "*" if on_target else "X"
                else:
                    row += {WALL: "#", FLOOR: "_", TARGET: "O"}[int(self.fixed[r, c])]
            rows.append(row)
        return rows

    def describe(self) -> str:
        def cells(group) -> str:
            return "; ".join(f"row {r + 1}, column {c + 1}" for r, c in sorted(group))

        targets = {tuple(int(v) for v in c) for c in np.argwhere(self.fixed == TARGET)}
        off = self.boxes - targets
        on = self.boxes & targets
        parts = [f"The map, row by row (# wall, _ floor, O target, X box, * box on a target, "
                 f"P you, + you on a target): {' '.join(self.grid())}.",
                 f"You are at row {self.player[0] + 1}, column {self.player[1] + 1}."]
        if off:
            parts.append(f"Boxes off target: {cells(off)}.")
            parts.append(f"Empty targets: {cells(targets - self.boxes)}.")
        if on:
            parts.append(f"Boxes on a target: {cells(on)}.")
        return " ".join(parts)

    def _obs(self) -> dict:
        return {"text": self.describe(), "actions": list(ACTIONS)}

    def admissible_actions(self) -> list[str]:
        return list(ACTIONS)

    def _on_target(self) -> int:
        return sum(self.fixed[cell] == TARGET for cell in self.boxes)

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._plans = {}
        while True:  # redraw levels solved in fewer than min_moves moves
            level_seed = int(self.np_random.integers(2**31 - 1))
            self.fixed, self.player, self.boxes = generate_level(self.dim, self.boxes_count,
                                                                 level_seed)
            lengths = self._solution_lengths()
            if lengths and min(lengths.values()) >= self.min_moves:
                break
        self._steps = 0
        return self._obs(), {"success": False, "level": level_seed}

    def step(self, action: Any):
        index = self.resolve_action(action)
        before = self._on_target()
        self.player, self.boxes = move(self.fixed, self.player, self.boxes, index)
        self._steps += 1
        after = self._on_target()
        success = after == len(self.boxes)
        reward = STEP_REWARD + (BOX_ON if after > before else BOX_OFF if after < before else 0)
        reward += SOLVED if success else 0.0
        truncated = not success and self._steps >= self.horizon
        return self._obs(), reward, success, truncated, {"success": success}

    def render(self) -> str:
        return "\n".join(self.grid())

    # -- expert ---------------------------------------------------------------------------
    def optimal_actions(self) -> list[str]:
        """Every move that begins a shortest solution; every move when none is left (a box
        stuck in a corner) or the solver gave up."""
        lengths = self._solution_lengths()
        if not lengths:
            return list(ACTIONS)
        best = min(lengths.values())
        return [ACTIONS[a] for a, n in sorted(lengths.items()) if n == best]

    def _solution_lengths(self) -> dict[int, int]:
        key = (self.player, self.boxes)
        if key not in self._plans:
            self._plans[key] = solution_lengths(self.fixed, self.player, self.boxes)
        return self._plans[key]
