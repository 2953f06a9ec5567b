"""BabyAI levels (the ``minigrid`` package's real engine) as text environments.

The agent sees what minigrid's 7x7 egocentric view shows (occlusion included), described in
words the way BALROG's BabyAI wrapper does: each visible object with its colour, door state and
offset ("2 steps left and 3 steps forward"), the nearest wall ahead, left and right, what is
directly in front and what the agent carries. The six primitive actions (``done`` is left out:
a level ends by itself when its mission is met) are always admissible. Reward is the level's:
``1 - 0.9 * steps / max_steps`` on success, else 0.

The expert is minigrid's BabyAI bot (``minigrid.utils.baby_ai_bot.BabyAIBot``), told after
every step which action was actually taken, so it replans after the agent's own moves.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from .base import TextEnv, llmrl_preset, text_observation_space

#: The primitive actions, in minigrid's action-id order (0..5).
ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")
DONE = 6  # minigrid's ``done`` action id, which the bot returns once it thinks it has finished

_OBJECT = {4: "door", 5: "key", 6: "ball", 7: "box", 8: "goal", 9: "lava"}
_WALL, _UNSEEN = 2, 0
_COLOUR = ("red", "green", "blue", "purple", "yellow", "grey")
_DOOR_STATE = ("open", "closed", "locked")
_VIEW = 7  # minigrid's default view; the agent is at column 3 of the last row, facing up
_AGENT_X, _AGENT_Y = _VIEW // 2, _VIEW - 1


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def offset_text(dx: int, forward: int) -> str:
    """Where a cell lies from the agent: ``dx`` cells to the right (negative: left) and
    ``forward`` cells ahead."""
    parts = []
    if dx:
        parts.append(_steps(abs(dx), "right" if dx > 0 else "left"))
    if forward:
        parts.append(_steps(forward, "forward"))
    return " and ".join(parts) or "where you stand"


def object_text(cell) -> str:
    """"a red ball", "a locked blue door" from one cell of minigrid's encoded view."""
    kind, colour, state = (int(v) for v in cell)
    name = _OBJECT[kind]
    if kind == 4:
        return f"a {_DOOR_STATE[state]} {_COLOUR[colour]} door"
    if kind in (8, 9):
        return f"the {name}" if kind == 8 else "lava"
    return f"a {_COLOUR[colour]} {name}"


def describe_view(image, carrying: str | None) -> str:
    """The text of one egocentric view (``image[x, y]`` = (object, colour, state))."""
    seen = []
    for x in range(_VIEW):
        for y in range(_VIEW):
            if (x, y) != (_AGENT_X, _AGENT_Y) and int(image[x, y, 0]) in _OBJECT:
                dx, forward = x - _AGENT_X, _AGENT_Y - y
                seen.append((abs(dx) + forward, forward, dx, object_text(image[x, y])))
    lines = [f"You see {what} {offset_text(dx, forward)}."
             for _, forward, dx, what in sorted(seen)]
    for word, cells in (
            ("forward", [(_AGENT_X, y) for y in range(_AGENT_Y - 1, -1, -1)]),
            ("left", [(x, _AGENT_Y) for x in range(_AGENT_X - 1, -1, -1)]),
            ("right", [(x, _AGENT_Y) for x in range(_AGENT_X + 1, _VIEW)])):
        for distance, (x, y) in enumerate(cells, start=1):
            kind = int(image[x, y, 0])
            if kind == _WALL and (word, distance) != ("forward", 1):  # "in front" says it
                lines.append(f"There is a wall {_steps(distance, word)}.")
            if kind in (_WALL, _UNSEEN) or (kind == 4 and int(image[x, y, 2]) != 0):
                break  # a wall, a closed door or what the agent cannot see ends the line
    front = image[_AGENT_X, _AGENT_Y - 1]
    ahead = int(front[0])
    if ahead in _OBJECT:
        lines.append(f"Directly in front of you is {object_text(front)}.")
    elif ahead == _WALL:
        lines.append("Directly in front of you is a wall.")
    else:
        lines.append("The cell in front of you is free.")
    lines.append(f"You are carrying {carrying}." if carrying else "You are carrying nothing.")
    return " ".join(lines)


class BabyAIText(TextEnv):
    """A BabyAI level in words. Options: ``level`` (any ``BabyAI-*`` id of minigrid; the
    subclasses below fix it) and ``horizon`` (step cap; default the level's own, or the
    subclass's ``default_horizon``)."""

    action_count = "6"
    question = "To complete the mission, what action should you take next?"
    # BabyAI is not in the paper; the Q-network is told the mission (``feature_task``), which
    # changes from episode to episode.
    preset = llmrl_preset(episodes=500)
    level_name = "BabyAI-GoToLocal-v0"
    default_horizon: int | None = None

    def __init__(self, level: str | None = None, horizon: int | None = None) -> None:
        import minigrid  # noqa: F401 - registers the BabyAI levels with gymnasium
        self.level = level or self.level_name
        if self.level not in gym.registry or not self.level.startswith("BabyAI-"):
            raise ValueError(f"unknown BabyAI level {self.level!r}; minigrid's levels are "
                             "named BabyAI-*-v0")
        horizon = horizon if horizon is not None else self.default_horizon
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self._env = gym.make(self.level, **({"max_steps": horizon} if horizon else {}))
        self.horizon = self._env.unwrapped.max_steps
        self.observation_space = text_observation_space()
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.instruction = ""
        self._text = ""
        self._bot = None
        self._suggested: int | None = None

    # -- text -----------------------------------------------------------------------------
    @property
    def feature_task(self) -> str:
        return f"Mission: {self.mission}"

    @property
    def mission(self) -> str:
        return self._env.unwrapped.mission

    def _observe(self, minigrid_obs: dict) -> dict:
        carrying = self._env.unwrapped.carrying
        self._text = describe_view(minigrid_obs["image"],
                                   object_text(carrying.encode()) if carrying else None)
        return {"text": self._text, "actions": list(ACTIONS)}

    def admissible_actions(self) -> list[str]:
        return list(ACTIONS)

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints each rejected layout
            minigrid_obs, _ = self._env.reset(seed=seed)
        self.instruction = f"Your task is to {self.mission}."
        self._start_bot()
        return self._observe(minigrid_obs), {"success": False, "mission": self.mission}

    def step(self, action: Any):
        index = self.resolve_action(action)
        minigrid_obs, reward, terminated, truncated, _ = self._env.step(index)
        success = bool(terminated and reward > 0)
        if terminated or truncated:
            self._suggested = None
        else:
            self._replan(index)
        info = {"success": success, "mission": self.mission}
        return self._observe(minigrid_obs), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> str:
        return f"{self.instruction} {self._text}"

    def close(self) -> None:
        self._env.close()

    # -- expert ---------------------------------------------------------------------------
    def _start_bot(self) -> None:
        """A fresh bot planning from the current state; none when it cannot plan from there
        (it asserts the agent carries nothing, for one: a wrong object picked up)."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        try:
            self._bot = BabyAIBot(self._env)
            self._suggested = int(self._bot.replan())
        except Exception:  # noqa: BLE001 - the bot's assertions on states it did not expect
            self._bot, self._suggested = None, None

    def _replan(self, action_taken: int) -> None:
        if self._bot is None:  # try again from this state
            self._start_bot()
            return
        try:
            self._suggested = int(self._bot.replan(action_taken))
        except Exception:  # noqa: BLE001 - the bot gives up on some states it did not expect
            self._start_bot()  # a fresh bot plans from what it sees now

    def optimal_actions(self) -> list[str]:
        """The bot's action; every action once the episode is over, the bot says ``done`` or
        no bot can plan from this state."""
        if self._suggested is None or self._suggested == DONE:
            return list(ACTIONS)
        return [ACTIONS[self._suggested]]


class BabyAIGoTo(BabyAIText):
    level_name = "BabyAI-GoToLocal-v0"


class BabyAIPickup(BabyAIText):
    level_name = "BabyAI-PickupLoc-v0"


class BabyAIUnlock(BabyAIText):
    level_name = "BabyAI-UnlockLocal-v0"
    default_horizon = 128


class BabyAIPutNext(BabyAIText):
    level_name = "BabyAI-PutNextLocal-v0"
