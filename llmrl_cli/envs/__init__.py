"""Text environments behind one interface, and the registry ``make(name, **kwargs)``."""

from __future__ import annotations

import inspect

from ..errors import UserError, unknown_choice
from .alfworld import Alfworld, AlfworldPick
from .babyai import BabyAIGoTo, BabyAIPickup, BabyAIPutNext, BabyAIUnlock
from .base import TextEnv
from .crafter import CrafterText
from .frozenlake import FrozenLakeText
from .overcooked import OvercookedSalad, OvercookedTomato
from .sokoban import SokobanText
from .textworld_cooking import TextWorldCooking
from .textworld_treasure import TextWorldTreasure

#: name -> (constructor, one-line description)
REGISTRY: dict[str, tuple[type[TextEnv], str]] = {
    "frozenlake": (
        FrozenLakeText,
        "gymnasium FrozenLake-v1 in words; 4x4 not slippery, horizon 20 (options: map_name, "
        "slippery, horizon)",
    ),
    "overcooked-tomato": (
        OvercookedTomato,
        "TWOSOME text Overcooked, tomato salad (LLMA-v4, task 0): 5 macro-actions, cap 31 "
        "macro-steps (option: horizon)",
    ),
    "overcooked-salad": (
        OvercookedSalad,
        "TWOSOME text Overcooked, lettuce-tomato salad (LLMA-v3, task 3): 8 macro-actions, cap "
        "51 macro-steps (option: horizon)",
    ),
    "alfworld-pick": (
        AlfworldPick,
        "ALFWorld Pick & Place on the real engine (alfworld 0.4.2); official games from "
        "$ALFWORLD_DATA, else generated ones; horizon 61 (options: split=train|unseen, data, "
        "horizon, wording=paper|alfworld, tasks=paper|all)",
    ),
    "alfworld": (
        Alfworld,
        "ALFWorld's six task types on the real engine: pick, clean, heat, cool, examine, "
        "pick-two; official games from $ALFWORLD_DATA, else generated ones; random games, the "
        "handcoded expert, horizon 61 (options: task_type=all|pick|clean|heat|cool|examine|"
        "pick-two, split=train|unseen, data, horizon, wording)",
    ),
    "babyai-goto": (
        BabyAIGoTo,
        "BabyAI GoToLocal (minigrid): go to an object in an 8x8 room among 8 distractors; 6 "
        "actions, cap 64 steps, the BabyAI bot as expert (options: level, horizon)",
    ),
    "babyai-pickup": (
        BabyAIPickup,
        "BabyAI PickupLoc (minigrid): pick up an object named by colour, type or place, 8x8 "
        "room; 6 actions, cap 64 steps, the BabyAI bot as expert (options: level, horizon)",
    ),
    "babyai-unlock": (
        BabyAIUnlock,
        "BabyAI UnlockLocal (minigrid): find the key, open the locked door of the agent's room; "
        "6 actions, cap 128 steps (the level's own: 576), the BabyAI bot as expert (options: "
        "level, horizon)",
    ),
    "babyai-putnext": (
        BabyAIPutNext,
        "BabyAI PutNextLocal (minigrid): find an object, pick it up, put it next to another, 8x8 "
        "room; 6 actions, cap 128 steps, the BabyAI bot as expert (options: level, horizon)",
    ),
    "textworld-cooking": (
        TextWorldCooking,
        "TextWorld cooking games (TextWorld's generator, made once into the cache), levels 1-4 "
        "from one ingredient in one room to three in nine rooms; the engine's admissible "
        "commands, its planner as expert (options: level=2, split=train|valid|test, games=20, "
        "horizon)",
    ),
    "textworld-treasure": (
        TextWorldTreasure,
        "TextWorld Treasure Hunter games (Cote et al. 2018; TextWorld's generator, made once "
        "into the cache), levels 1-30: find the object among distractors, from 5 open rooms to "
        "20 with locked doors; the engine's admissible commands, its planner as expert "
        "(options: level=15, split=train|valid|test, games=20, horizon)",
    ),
    "sokoban": (
        SokobanText,
        "Sokoban in words on gym_sokoban's generated, solvable levels (6x6, one box, cap 100 "
        "steps: RAGEN's); 4 moves, an exact solver as expert (options: dim, boxes, horizon)",
    ),
    "crafter": (
        CrafterText,
        "Crafter (the crafter package's engine) in words: an open survival world, 17 actions, "
        "the episode's goal one of its 22 achievements (default place_table), cap 200 steps; "
        "no expert (options: goal, horizon, area)",
    ),
}


def env_names() -> list[str]:
    return list(REGISTRY)


def env_class(name: str) -> type[TextEnv]:
    """The class of the text environment ``name``: its prompt, question and preset."""
    if name not in REGISTRY:
        raise unknown_choice("env", name, REGISTRY)
    return REGISTRY[name][0]


def env_options(name: str) -> list[str]:
    """The options (``env_kwargs``, ``--env-option``) the env ``name`` takes."""
    params = inspect.signature(env_class(name).__init__).parameters.values()
    return [p.name for p in params if p.name != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_env_options(name: str, options: dict) -> None:
    """One error line for an option the env ``name`` does not take."""
    params = inspect.signature(env_class(name).__init__).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return  # it takes any option
    unknown = sorted(set(options) - set(env_options(name)))
    if unknown:
        raise UserError(f"{name} has no option {', '.join(map(repr, unknown))}; its options: "
                        f"{', '.join(env_options(name)) or 'none'}")


def make(name: str, **kwargs) -> TextEnv:
    """Build the text environment ``name`` (see ``env_names()``)."""
    check_env_options(name, kwargs)
    return env_class(name)(**kwargs)


__all__ = ["TextEnv", "make", "env_class", "env_names", "env_options", "check_env_options",
           "REGISTRY"]
