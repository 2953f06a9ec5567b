"""The prior's query for one state: the env's prompt (``TextEnv.prompt``, in the paper's
layout for that env) with the admissible actions in a slot, so that a prior can list them in
any order (``PriorQuery.prompt_for``)."""

from __future__ import annotations

from collections.abc import Sequence

from ..envs import env_class
from ..envs.base import history_line
from .base import ACTIONS_SLOT, PriorQuery, format_actions

__all__ = ["build_prompt", "build_query", "history_line"]


def build_prompt(
    env_name: str,
    instruction: str,
    observation: str,
    actions: Sequence[str],
    history: Sequence[str] = (),
) -> str:
    """The prior's prompt for one state; ``history`` holds ``history_line`` strings."""
    return build_query(env_name, instruction, observation, actions, history).prompt


def build_query(
    env_name: str,
    instruction: str,
    observation: str,
    actions: Sequence[str],
    history: Sequence[str] = (),
    optimal: Sequence[str] = (),
) -> PriorQuery:
    """A PriorQuery for one state of env ``env_name`` (its prompt with ``ACTIONS_SLOT`` where
    the admissible actions go); ``optimal``: the env expert's optimal actions, if known."""
    env = env_class(env_name)
    template = env.prompt(instruction, observation, ACTIONS_SLOT, history)
    style = env.action_list_style
    return PriorQuery(prompt=template.replace(ACTIONS_SLOT, format_actions(actions, style)),
                      actions=tuple(actions), optimal=tuple(optimal), template=template,
                      list_style=style)
