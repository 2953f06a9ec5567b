"""Crafter (Hafner, 2021; the ``crafter`` package's real engine) as a text environment.

Crafter is an open 2D survival world: the agent collects wood, stone, coal, iron and diamonds,
places a table and a furnace, makes pickaxes and swords, drinks, eats, sleeps and fights
zombies and skeletons; 22 achievements in all. The agent sees what the game's 9x7 local view
shows, described in words the way BALROG's Crafter wrapper does: for each kind of terrain or
creature in view, where the nearest one lies ("3 steps north and 1 step west"), what the agent
faces, its vitals and inventory. The 17 actions are always admissible (an impossible one does
nothing, as in the game). Reward is the game's: +1 for each achievement unlocked for the first
time in the episode, and the change in health / 10.

llmrl gives each episode a goal, one achievement (``goal``, default ``place_table``): the
episode succeeds, and ends, when it is unlocked; it also ends when the agent dies or after
``horizon`` steps. Crafter has no planner, so this env has no expert: ``expert-mix`` priors,
``llmrl collect`` and the optimal-action rate are not available.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

from .base import TextEnv, llmrl_preset, text_observation_space

#: The game's action names (crafter/data.yaml, in its order) and how the text names them.
_GAME_ACTIONS = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)
ACTIONS = (
    "noop", "move west", "move east", "move north", "move south", "do", "sleep",
    "place stone", "place table", "place furnace", "place plant", "make wood pickaxe",
    "make stone pickaxe", "make iron pickaxe", "make wood sword", "make stone sword",
    "make iron sword",
)
ACHIEVEMENTS = (
    "collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling",
    "collect_stone", "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow",
    "eat_plant", "make_iron_pickaxe", "make_iron_sword", "make_stone_pickaxe",
    "make_stone_sword", "make_wood_pickaxe", "make_wood_sword", "place_furnace",
    "place_plant", "place_stone", "place_table", "wake_up",
)
_VITALS = ("health", "food", "drink", "energy")
_VIEW_X, _VIEW_Y = 4, 3  # the local view reaches 4 cells east/west and 3 north/south
_FACING = {(-1, 0): "west", (1, 0): "east", (0, -1): "north", (0, 1): "south"}

RULES = (
    "Crafter is a 2D world seen from above. Moving into grass, sand or path walks there; "
    "moving toward anything else turns you to face it. 'do' acts on what you face: it collects "
    "a tree (wood), stone, coal, iron or diamond (stone and coal need a wood pickaxe, iron a "
    "stone pickaxe, diamond an iron pickaxe), drinks water, eats a cow or attacks a zombie or "
    "skeleton. A table takes 2 wood (placed on the cell you face); pickaxes and swords are "
    "made next to a table (iron ones also next to a furnace, which takes stone). Keep food, "
    "drink and energy up (eat, drink, sleep) or you lose health."
)


def goal_text(achievement: str) -> str:
    """"place a table", "defeat a zombie", "collect wood": an achievement as a task."""
    verb, _, thing = achievement.partition("_")
    if verb in ("place", "make", "defeat", "eat"):
        return f"{verb} a {thing.replace('_', ' ')}"
    return achievement.replace("_", " ")


def offset_text(dx: int, dy: int) -> str:
    """Where a cell lies from the agent: ``dx`` cells east (negative: west) and ``dy`` cells
    south (negative: north)."""
    parts = []
    if dy:
        parts.append(f"{abs(dy)} step{'s' if abs(dy) != 1 else ''} "
                     f"{'south' if dy > 0 else 'north'}")
    if dx:
        parts.append(f"{abs(dx)} step{'s' if abs(dx) != 1 else ''} "
                     f"{'east' if dx > 0 else 'west'}")
    return " and ".join(parts)


def _crafter():
    import crafter  # noqa: PLC0415 (imported on first use: it loads image assets)

    class TextOnlyEnv(crafter.Env):
        """The game without its pixel observation (the text env never shows it)."""

        def _obs(self):
            return None

    return TextOnlyEnv


class CrafterText(TextEnv):
    """Crafter with a goal achievement. Options: ``goal`` (one of the 22 achievements, default
    ``place_table``), ``horizon`` (steps, default 200), ``area`` (the world's side, default 64,
    the game's)."""

    action_count = "17"
    question = "To reach your goal, what action should you take next?"
    preset = llmrl_preset(episodes=500)

    def __init__(self, goal: str = "place_table", horizon: int = 200, area: int = 64) -> None:
        if goal not in ACHIEVEMENTS:
            raise ValueError(f"unknown goal {goal!r}; choose one of: {', '.join(ACHIEVEMENTS)}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not 16 <= area <= 128:
            raise ValueError(f"area must be between 16 and 128, got {area}")
        self.goal, self.horizon, self.area = goal, horizon, area
        self.instruction = f"Your goal is to {goal_text(goal)}. {RULES}"
        self.observation_space = text_observation_space()
        self.action_space = spaces.Discrete(len(ACTIONS))
        # the game's own episode cap stays above ours; worlds are drawn per reset (below)
        self._game = _crafter()(area=(area, area), length=horizon + 1, seed=0)
        self._steps = 0
        self._feedback = ""

    # -- text -----------------------------------------------------------------------------
    def _cell(self, pos) -> str | None:
        """What occupies a world cell: a creature's name, else the terrain's; None outside."""
        material, obj = self._game._world[pos]
        if obj is not None and obj is not self._game._player:
            return type(obj).__name__.lower()
        return material

    def describe(self) -> str:
        player = self._game._player
        x, y = (int(v) for v in player.pos)
        nearest: dict[str, tuple[int, int, int]] = {}
        for dy in range(-_VIEW_Y, _VIEW_Y + 1):
            for dx in range(-_VIEW_X, _VIEW_X + 1):
                if dx == dy == 0:
                    continue
                name = self._cell((x + dx, y + dy))
                if name is None:
                    continue
                key = (abs(dx) + abs(dy), dy, dx)
                if name not in nearest or key < nearest[name]:
                    nearest[name] = key
        seen = "; ".join(f"{name} {offset_text(dx, dy)}"
                         for name, (_, dy, dx) in sorted(nearest.items(), key=lambda i: i[1]))
        fx, fy = (int(v) for v in player.facing)
        facing = self._cell((x + fx, y + fy)) or "the edge of the world"
        vitals = ", ".join(f"{k} {player.inventory[k]}/9" for k in _VITALS)
        items = ", ".join(f"{n} {name.replace('_', ' ')}"
                          for name, n in player.inventory.items()
                          if name not in _VITALS and n > 0)
        parts = [self._feedback] if self._feedback else []
        parts += [f"You see: {seen or 'nothing'}.",
                  f"You face {facing} ({_FACING[(fx, fy)]}).",
                  f"Your {vitals}.",
                  f"You have {items or 'nothing'}."]
        if player.sleeping:
            parts.append("You are asleep.")
        if self._game._world.daylight < 0.3:
            parts.append("It is night.")
        return " ".join(parts)

    def _obs(self) -> dict:
        return {"text": self.describe(), "actions": list(ACTIONS)}

    def admissible_actions(self) -> list[str]:
        return list(ACTIONS)

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # the game draws world number ``_episode`` of its seed at reset: one world per draw
        self._game._seed = int(self.np_random.integers(2**31 - 1))
        self._game._episode = 0
        self._game.reset()
        self._steps, self._feedback = 0, ""
        return self._obs(), {"success": False, "world": self._game._seed}

    def step(self, action: Any):
        index = self.resolve_action(action)
        before = set(self._game._unlocked)
        _, reward, _, info = self._game.step(index)
        self._steps += 1
        new = sorted(self._game._unlocked - before)
        self._feedback = ("You unlocked: " + ", ".join(n.replace("_", " ") for n in new) + "."
                          if new else "")
        success = self.goal in self._game._unlocked
        terminated = success or bool(info["discount"] == 0)
        truncated = not terminated and self._steps >= self.horizon
        return self._obs(), float(reward), terminated, truncated, {
            "success": success, "achievements": sorted(self._game._unlocked)}

    def render(self) -> str:
        return self.describe()
