"""Text environments behind one interface, and the registry ``make(name, **kwargs)``."""

from __future__ import annotations

import inspect

from ..errors import UserError, unknown_choice
from .alfworld import AlfworldPick
from .base import TextEnv
from .frozenlake import FrozenLakeText
from .overcooked import OvercookedSalad, OvercookedTomato

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
