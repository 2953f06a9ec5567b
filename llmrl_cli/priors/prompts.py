"""Per-environment prompts for the LLM prior, in the paper's layout.

The reference code prompts with the instruction, the last 3 observation/action pairs, the
current observation and the admissible actions, ending with ``Action:``::

    {instruction}
    History:
    Observation: {o}. Action: {a}.      (at most 3 lines; empty at the first step)
    Current Observation: {observation}
    {question} Based on your previous observations and actions, please select only one action
    for the next step from the admissible actions: ['a', 'b', ...]. Action:

ALFWorld's current observation also ends as LLF-Bench's does (the paper reached ALFWorld through
LLF-Bench): ``{observation}. You are allowed to take the following actions: ['a', ...].``
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import ACTIONS_SLOT, PriorQuery

HISTORY_LENGTH = 3

#: The question that precedes the admissible actions, per env.
QUESTIONS = {
    "frozenlake": "To reach the goal without falling into a hole, what action should you take next?",
    # The paper's own wording (value-based/train_overcooked.py, test_overcooked_salad.py).
    "overcooked-tomato": "To serve the dish of a bowl containing only chopped tomatoes, what "
                         "action should you take next?",
    "overcooked-salad": "To serve the dish of a bowl only containing chopped tomato and lettuce, "
                        "what action should you take next?",
    "alfworld-pick": "To complete your task, what action should you take next?",
}
#: envs whose current observation lists the allowed actions (LLF-Bench's ALFWorld wrapper)
LISTS_ACTIONS = ("alfworld-pick",)
DEFAULT_QUESTION = "To complete the task, what action should you take next?"


def history_line(observation: str, action: str) -> str:
    return f"Observation: {observation}. Action: {action}."


def prompt_template(env_name: str, instruction: str, observation: str,
                    history: Sequence[str] = ()) -> str:
    """The prompt with ``ACTIONS_SLOT`` where the admissible-action list goes."""
    question = QUESTIONS.get(env_name, DEFAULT_QUESTION)
    if env_name in LISTS_ACTIONS:
        observation = (f"{observation.rstrip('.')}. You are allowed to take the following "
                       f"actions: {ACTIONS_SLOT}.")
    return (
        f"{instruction}\nHistory:\n" + "\n".join(list(history)[-HISTORY_LENGTH:])
        + f"\nCurrent Observation: {observation}\n{question} Based on your previous observations "
        f"and actions, please select only one action for the next step from the admissible "
        f"actions: {ACTIONS_SLOT}. Action:"
    )


def build_prompt(
    env_name: str,
    instruction: str,
    observation: str,
    actions: Sequence[str],
    history: Sequence[str] = (),
) -> str:
    """The prior's prompt for one state; ``history`` holds ``history_line`` strings."""
    return prompt_template(env_name, instruction, observation, history).replace(
        ACTIONS_SLOT, str(list(actions)))


def build_query(
    env_name: str,
    instruction: str,
    observation: str,
    actions: Sequence[str],
    history: Sequence[str] = (),
    optimal: Sequence[str] = (),
) -> PriorQuery:
    """A PriorQuery whose actions can be listed in any order (see ``PriorQuery.prompt_for``)."""
    template = prompt_template(env_name, instruction, observation, history)
    return PriorQuery(prompt=template.replace(ACTIONS_SLOT, str(list(actions))),
                      actions=tuple(actions), optimal=tuple(optimal), template=template)
