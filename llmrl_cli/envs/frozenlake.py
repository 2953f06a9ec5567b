"""Frozen Lake as a text environment, on top of gymnasium's real ``FrozenLake-v1``.

The paper's text wrapper is not public; this one describes the agent's position, the goal and
what lies one step away in each direction, and offers the four moves as admissible actions
(``left, down, right, up`` = gymnasium's action ids 0..3). Reward 1 at the goal; a hole ends
the episode with reward 0; episodes are truncated after ``horizon`` steps (default 20).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from .base import TextEnv, text_observation_space

MOVES = ("left", "down", "right", "up")
_DELTAS = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}
_CELL_NAMES = {"S": "frozen ice", "F": "frozen ice", "H": "a hole", "G": "the goal"}
_DIRECTION_PHRASES = ("to your left", "below you", "to your right", "above you")


class FrozenLakeText(TextEnv):
    """Text Frozen Lake. Options: ``map_name`` ("4x4" or "8x8"), ``slippery``, ``horizon``.

    Frozen Lake is one of the paper's three environments, but its code is not public (the
    scripts import AIF.env.frozen_lake), so its prompt, question and schedule are ours: the
    Overcooked prompt layout and value-learning settings, 300 episodes, greedy evaluation,
    eps-greedy 0.3 for the baseline.
    """

    action_count = "4"
    question = "To reach the goal without falling into a hole, what action should you take next?"
    preset = {
        "episodes": 300,
        "agent": {"eval_every": 20, "eval_episodes": 10, "eval_policy": "greedy",
                  "feature_norm": True},
        "per_algo": {
            "dqn": {"exploration": "eps-greedy", "epsilon": 0.3},
            "dqn-prior": {"exploration": "softmax", "alpha": 0.1},
        },
    }

    def __init__(self, map_name: str = "4x4", slippery: bool = False, horizon: int = 20) -> None:
        if map_name not in ("4x4", "8x8"):
            raise ValueError(f"unknown Frozen Lake map {map_name!r}; choose 4x4 or 8x8")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self._env = gym.make(
            "FrozenLake-v1", map_name=map_name, is_slippery=slippery, max_episode_steps=horizon
        )
        self.desc = [[c.decode() for c in row] for row in self._env.unwrapped.desc]
        self.nrow, self.ncol = len(self.desc), len(self.desc[0])
        self.slippery = slippery
        self.horizon = horizon
        self.goal = next(
            (r, c) for r in range(self.nrow) for c in range(self.ncol) if self.desc[r][c] == "G"
        )
        self.instruction = (
            "Your task is to walk across the frozen lake to the goal without falling into a hole."
        )
        self.observation_space = text_observation_space()
        self.action_space = spaces.Discrete(len(MOVES))
        self._pos = 0
        self._distances = self._distances_to_goal()

    # -- text -----------------------------------------------------------------------------
    def describe(self, pos: int) -> str:
        row, col = divmod(pos, self.ncol)
        cell = self.desc[row][col]
        parts = [
            f"You are at row {row + 1}, column {col + 1} of a {self.nrow}x{self.ncol} frozen "
            f"lake; the goal is at row {self.goal[0] + 1}, column {self.goal[1] + 1}."
        ]
        if self.slippery:
            parts.append("The ice is slippery: a move may carry you sideways.")
        if cell == "H":
            parts.append("You fell into a hole.")
        elif cell == "G":
            parts.append("You reached the goal.")
        else:
            around = []
            for action, phrase in enumerate(_DIRECTION_PHRASES):
                r, c = row + _DELTAS[action][0], col + _DELTAS[action][1]
                if 0 <= r < self.nrow and 0 <= c < self.ncol:
                    what = _CELL_NAMES[self.desc[r][c]]
                else:
                    what = "the edge"
                around.append(f"{phrase} is {what}")
            parts.append(around[0][0].upper() + ", ".join(around)[1:] + ".")
        return " ".join(parts)

    def _obs(self) -> dict:
        return {"text": self.describe(self._pos), "actions": list(MOVES)}

    def admissible_actions(self) -> list[str]:
        return list(MOVES)

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pos, info = self._env.reset(seed=seed)
        return self._obs(), {"success": False, "position": int(self._pos)}

    def step(self, action: Any):
        index = self.resolve_action(action)
        self._pos, reward, terminated, truncated, _ = self._env.step(index)
        row, col = divmod(int(self._pos), self.ncol)
        success = self.desc[row][col] == "G"
        info = {"success": success, "position": int(self._pos)}
        return self._obs(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str:
        return self.describe(self._pos)

    def close(self) -> None:
        self._env.close()

    # -- expert ---------------------------------------------------------------------------
    def _neighbour(self, pos: int, action: int) -> int:
        row, col = divmod(pos, self.ncol)
        r = min(max(row + _DELTAS[action][0], 0), self.nrow - 1)
        c = min(max(col + _DELTAS[action][1], 0), self.ncol - 1)
        return r * self.ncol + c

    def _distances_to_goal(self) -> dict[int, int]:
        """Breadth-first distances (in deterministic moves) from every safe cell to the goal."""
        goal = self.goal[0] * self.ncol + self.goal[1]
        dist = {goal: 0}
        queue = deque([goal])
        while queue:
            cell = queue.popleft()
            for pos in range(self.nrow * self.ncol):
                r, c = divmod(pos, self.ncol)
                if pos in dist or self.desc[r][c] in "HG":
                    continue
                if any(self._neighbour(pos, a) == cell for a in range(4)):
                    dist[pos] = dist[cell] + 1
                    queue.append(pos)
        return dist

    def optimal_actions(self) -> list[str]:
        here = self._distances.get(int(self._pos))
        if here is None or here == 0:
            return list(MOVES)  # in a hole, at the goal, or cut off: every move is as good
        return [
            MOVES[a]
            for a in range(4)
            if self._distances.get(self._neighbour(int(self._pos), a), here + 1) == here - 1
        ]
