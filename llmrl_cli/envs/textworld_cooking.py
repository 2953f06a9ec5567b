"""TextWorld's cooking games (the First TextWorld Problems' kind) as text environments.

The games are made by TextWorld's own generator (``textworld.challenges.tw_cooking``, installed
with alfworld); pools, observations, rewards and the planner expert are those of
``textworld_games.py``. ``split`` is TextWorld's: the food items and their preparations of
``train``, ``valid`` or ``test``.

Levels (TextWorld's settings; ``drop`` stays off: its games leave TextWorld's planner without a
plan part-way): 1 = one ingredient, one room; 2 = one ingredient to cut, six rooms, closed doors
and containers; 3 = two ingredients to cut and cook, six rooms; 4 = three ingredients, nine rooms.
The instruction states the game's recipe (from its cookbook), so an episode needs no
``examine cookbook``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import llmrl_preset
from .textworld_games import TextWorldGames

#: level -> TextWorld's cooking settings and the step cap
LEVELS: dict[int, tuple[dict[str, Any], int]] = {
    1: ({"recipe": 1, "take": 1, "go": 1, "open": False, "cook": False, "cut": False}, 20),
    2: ({"recipe": 1, "take": 1, "go": 6, "open": True, "cook": False, "cut": True}, 40),
    3: ({"recipe": 2, "take": 2, "go": 6, "open": True, "cook": True, "cut": True}, 60),
    4: ({"recipe": 3, "take": 3, "go": 9, "open": True, "cook": True, "cut": True}, 100),
}


def pool_dir(level: int, split: str) -> Path:
    return TextWorldCooking.pool_dir(level, split)


def recipe_sentence(recipe: str) -> str:
    """'Ingredients: red potato. Directions: dice the red potato; fry the red potato; prepare
    meal.' from the cookbook's text."""
    lines = [line.strip() for line in recipe.splitlines()]
    ingredients = lines[lines.index("Ingredients:") + 1:lines.index("Directions:")]
    directions = lines[lines.index("Directions:") + 1:]
    return (f"Ingredients: {', '.join(i for i in ingredients if i)}. "
            f"Directions: {'; '.join(d for d in directions if d)}.")


class TextWorldCooking(TextWorldGames):
    """A TextWorld cooking game. Options: ``level`` (1-4), ``split`` (train, valid, test),
    ``games`` (pool size), ``horizon`` (step cap; default the level's)."""

    env_name = "textworld-cooking"
    kind = "cooking"
    levels = {level: cap for level, (_, cap) in LEVELS.items()}
    extras = ("recipe",)
    question = "To cook and eat the meal, what action should you take next?"
    # TextWorld is not in the paper; the Q-network is told the recipe, which changes from game
    # to game.
    preset = llmrl_preset(episodes=300)

    def __init__(self, level: int = 2, split: str = "train", games: int = 20,
                 horizon: int | None = None) -> None:
        super().__init__(level, split, games, horizon)

    @classmethod
    def make_game(cls, level: int, split: str, seed: int, options):
        from textworld.challenges.tw_cooking import cooking

        settings = {**LEVELS[level][0], "drop": False, "recipe_seed": seed, "split": split}
        return cooking.make(settings, options)

    def instruction_of(self, state) -> str:
        return ("Your task is to cook the meal of this recipe and eat it. "
                + recipe_sentence(state["extra.recipe"]))
