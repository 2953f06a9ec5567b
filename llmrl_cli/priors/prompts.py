"""Per-environment prompts for the LLM prior, in the paper's layouts.

Overcooked (value-based/train_overcooked.py:334-337, 397-400; test_overcooked_salad.py:304-305)
and, in the same layout, Frozen Lake (whose prompt the paper's public code does not hold)::

    {instruction}
    History:
    Observation: {o}. Action: {a}.      (the last ``history_length`` lines; empty at first)
    Current Observation: {observation}
    {question} Based on your previous observations and actions, please select only one action
    for the next step from the admissible actions: ['a', 'b', ...]. Action:

ALFWorld (train_alfworld.py:317-327, 395): no history, the task, and LLF-Bench's observation,
which lists the actions joined by ", " (``envs.alfworld.paper_prompt``)::

    Task: Your task is to: put a candle in toilet.
    Current observation:{observation}. You are allowed to take the following actions: a, b.
    Please select an action from the admissible actions. \n Action:
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import ACTIONS_SLOT, PriorQuery, format_actions

#: The question that precedes the admissible actions, per env.
QUESTIONS = {
    "frozenlake": "To reach the goal without falling into a hole, what action should you take next?",
    # The paper's own wording (value-based/train_overcooked.py, test_overcooked_salad.py).
    "overcooked-tomato": "To serve the dish of a bowl containing only chopped tomatoes, what "
                         "action should you take next?",
    "overcooked-salad": "To serve the dish of a bowl only containing chopped tomato and lettuce, "
                        "what action should you take next?",
}
#: envs prompted in the paper's ALFWorld layout
ALFWORLD_LAYOUT = ("alfworld-pick",)
DEFAULT_QUESTION = "To complete the task, what action should you take next?"


_TASK = re.compile(r"Your task is to: ([^.]+\.?)")


def task_in(instruction: str) -> str:
    """The task an instruction states ("put a candle in toilet."), found as the paper's ALFWorld
    script finds it (value-based/train_alfworld.py:320: 'Your task is to: [^.]+\\.?')."""
    match = _TASK.search(instruction)
    if match is None:
        raise ValueError(f"no 'Your task is to: ...' in the instruction {instruction!r}")
    return match.group(1)


def history_line(observation: str, action: str) -> str:
    return f"Observation: {observation}. Action: {action}."


def prompt_template(env_name: str, instruction: str, observation: str,
                    history: Sequence[str] = ()) -> str:
    """The prompt with ``ACTIONS_SLOT`` where the admissible-action list goes; ``history``
    holds ``history_line`` strings, all of which are used (the caller keeps the last few)."""
    if env_name in ALFWORLD_LAYOUT:
        from ..envs.alfworld import paper_prompt

        return paper_prompt(task_in(instruction), observation, [ACTIONS_SLOT])
    question = QUESTIONS.get(env_name, DEFAULT_QUESTION)
    return (
        f"{instruction}\nHistory:\n" + "\n".join(history)
        + f"\nCurrent Observation: {observation}\n{question} Based on your previous observations "
        f"and actions, please select only one action for the next step from the admissible "
        f"actions: {ACTIONS_SLOT}. Action:"
    )


def list_style(env_name: str) -> str:
    """How the env's prompt writes the admissible actions (``PriorQuery.list_style``)."""
    return "comma" if env_name in ALFWORLD_LAYOUT else "python"


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
    """A PriorQuery whose actions can be listed in any order (see ``PriorQuery.prompt_for``)."""
    template = prompt_template(env_name, instruction, observation, history)
    style = list_style(env_name)
    return PriorQuery(prompt=template.replace(ACTIONS_SLOT, format_actions(actions, style)),
                      actions=tuple(actions), optimal=tuple(optimal), template=template,
                      list_style=style)
