"""Text environments behind one interface, and the registry ``make(name, **kwargs)``."""

from __future__ import annotations

from typing import Callable

from ..errors import unknown_choice
from .alfworld import AlfworldPick
from .base import TextEnv
from .frozenlake import FrozenLakeText
from .overcooked import OvercookedSalad, OvercookedTomato

#: name -> (constructor, one-line description)
REGISTRY: dict[str, tuple[Callable[..., TextEnv], str]] = {
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
}


def env_names() -> list[str]:
    return list(REGISTRY)


def make(name: str, **kwargs) -> TextEnv:
    """Build the text environment ``name`` (see ``env_names()``)."""
    if name not in REGISTRY:
        raise unknown_choice("env", name, REGISTRY)
    return REGISTRY[name][0](**kwargs)


__all__ = ["TextEnv", "make", "env_names", "REGISTRY"]
