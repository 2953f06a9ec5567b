"""Per-environment prompts for the LLM prior, in the paper's layout.

The reference code prompts with the instruction, the last 3 observation/action pairs, the
current observation and the admissible actions, ending with ``Action:``::

    {instruction}
    History:
    Observation: {o}. Action: {a}.      (at most 3 lines; empty at the first step)
    Current Observation: {observation}
    {question} Based on your previous observations and actions, please select only one action
    for the next step from the admissible actions: ['a', 'b', ...]. Action:
"""

from __future__ import annotations

from collections.abc import Sequence

HISTORY_LENGTH = 3

#: The question that precedes the admissible actions, per env.
QUESTIONS = {
    "frozenlake": "To reach the goal without falling into a hole, what action should you take next?",
}
DEFAULT_QUESTION = "To complete the task, what action should you take next?"


def history_line(observation: str, action: str) -> str:
    return f"Observation: {observation}. Action: {action}."


def build_prompt(
    env_name: str,
    instruction: str,
    observation: str,
    actions: Sequence[str],
    history: Sequence[str] = (),
) -> str:
    """The prior's prompt for one state; ``history`` holds ``history_line`` strings."""
    question = QUESTIONS.get(env_name, DEFAULT_QUESTION)
    return (
        f"{instruction}\nHistory:\n" + "\n".join(history[-HISTORY_LENGTH:])
        + f"\nCurrent Observation: {observation}\n{question} Based on your previous observations "
        f"and actions, please select only one action for the next step from the admissible "
        f"actions: {list(actions)}. Action:"
    )
