"""The text-environment interface every llmrl environment follows.

An observation is ``{"text": str, "actions": list[str]}``: the state description and the
admissible actions. ``env.instruction`` is the task sentence. ``step`` accepts an index into
``obs["actions"]`` or one of those strings; anything else raises ``ValueError``.

An env also owns the text around it: the prior's prompt (``prompt``, its ``question`` and
``action_list_style``), the Q-network's input text (``q_input``, ``feature_task``) and its run
settings (``preset``). Adding an env is one class and one ``envs.REGISTRY`` entry.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any, SupportsInt

import gymnasium as gym
from gymnasium import spaces

#: Characters a text observation may contain (gymnasium's ``Text`` space needs a charset).
TEXT_CHARSET = frozenset(string.printable)
MAX_TEXT = 8192
#: The question before the admissible actions for an env that states none of its own.
DEFAULT_QUESTION = "To complete the task, what action should you take next?"


def history_line(observation: str, action: str) -> str:
    """One line of a prompt's history (the paper's Overcooked layout, ``TextEnv.prompt``)."""
    return f"Observation: {observation}. Action: {action}."


def llmrl_preset(episodes: int) -> dict[str, Any]:
    """The run settings (``TextEnv.preset``) of an env that is not in the paper: Frozen Lake's
    value learning (eps-greedy 0.3 for dqn, softmax with alpha 0.1 over the proposals for
    dqn-prior, normalised features), 10 greedy evaluation episodes every 25, ``episodes`` of
    training."""
    return {
        "episodes": episodes,
        "agent": {"eval_every": 25, "eval_episodes": 10, "eval_policy": "greedy",
                  "feature_norm": True},
        "per_algo": {
            "dqn": {"exploration": "eps-greedy", "epsilon": 0.3},
            "dqn-prior": {"exploration": "softmax", "alpha": 0.1},
        },
    }


class TextList(spaces.Sequence):
    """A variable-length list of strings (gymnasium's ``Sequence`` only accepts tuples)."""

    def __init__(self, max_length: int = 512) -> None:
        super().__init__(spaces.Text(max_length, charset=TEXT_CHARSET), stack=False)

    def contains(self, x: Any) -> bool:
        return isinstance(x, (list, tuple)) and all(self.feature_space.contains(i) for i in x)


def text_observation_space() -> spaces.Dict:
    """The observation space shared by all text envs: a description and a list of actions."""
    return spaces.Dict(
        {"text": spaces.Text(MAX_TEXT, min_length=0, charset=TEXT_CHARSET), "actions": TextList()}
    )


class TextEnv(gym.Env[dict, int]):
    """Base class: subclasses implement ``_reset``, ``_step`` and ``admissible_actions``.

    The base class owns action resolution (index or string) so every env rejects bad actions
    with the same message, and exposes the optional ``optimal_actions`` hook used by the
    ``expert-mix`` prior and by diagnostics (is the optimal move among the prior's proposals?).
    """

    metadata = {"render_modes": ["ansi"]}
    instruction: str = ""
    #: The question the prior's prompt asks before the admissible actions (``prompt``).
    question: str = DEFAULT_QUESTION
    #: How the prompt writes the admissible actions: "python" (``['a', 'b']``, the Overcooked
    #: scripts' ``str(list)``) or "comma" (``a, b``, LLF-Bench's ALFWorld observation).
    action_list_style: str = "python"
    #: The env's run settings, above the dataclass defaults and below a YAML file and flags
    #: (``config.build_config``): top-level run settings, ``agent`` settings and ``per_algo``
    #: (algo name -> settings for that algo only). For the paper's envs, the paper's values;
    #: docs/paper-settings.md traces each to the paper's code.
    preset: dict[str, Any] = {}
    #: How many admissible actions a state offers, as ``llmrl envs`` prints it: a number, or
    #: a range where the env's commands change from state to state.
    action_count: str = "?"

    @classmethod
    def has_expert(cls) -> bool:
        """Whether the env implements ``optimal_actions`` (``expert-mix`` priors, ``llmrl
        collect`` and the optimal-action rate need it)."""
        return cls.optimal_actions is not TextEnv.optimal_actions

    def admissible_actions(self) -> list[str]:
        raise NotImplementedError

    @classmethod
    def prompt(cls, instruction: str, observation: str, actions_text: str,
               history: Sequence[str] = ()) -> str:
        """The prior's prompt for one state, with ``actions_text`` where the admissible actions
        are listed; ``history`` holds ``history_line`` strings, all of which are used (the caller
        keeps the last few). The paper's Overcooked layout (train_overcooked.py:334-337,
        397-400; test_overcooked_salad.py:304-305)::

            {instruction}
            History:
            Observation: {o}. Action: {a}.      (the history lines; none at first)
            Current Observation: {observation}
            {question} Based on your previous observations and actions, please select only one
            action for the next step from the admissible actions: ['a', 'b']. Action:
        """
        return (
            f"{instruction}\nHistory:\n" + "\n".join(history)
            + f"\nCurrent Observation: {observation}\n{cls.question} Based on your previous "
            f"observations and actions, please select only one action for the next step from "
            f"the admissible actions: {actions_text}. Action:"
        )

    @property
    def feature_task(self) -> str | None:
        """The task the Q-network's input names beside each (state, action), or None for envs
        with one fixed task (see ``q_input``)."""
        return None

    @classmethod
    def q_input(cls, state: str, action: str, task: str | None = None) -> str:
        """The Q-network's input text for one (state, action) candidate, byte for byte as the
        paper's ``feat_generate`` writes it (two spaces before "Action"):
        value-based/train_overcooked.py:268; with a task (``feature_task``, or CQL's
        ``q_text_task``), train_alfworld.py:285 and CQL_overcook_salad.py:264."""
        if task:
            return f"{task},  Action: {action}, for Observation: {state},"
        return f"Observation: {state},  Action: {action}."

    def episode_options(self, kind: str, index: int, run_seed: int) -> dict | None:
        """The ``reset`` options of an episode: the ``index``-th training episode of the run
        (``kind="train"``, counted from 0 over the whole run) or the ``index``-th episode of an
        evaluation (``kind="eval"``); ``run_seed`` is the run's seed.

        Envs whose protocol fixes which task each episode plays (ALFWorld's training schedule
        over task strings) say so here, so the runner need not know any env's protocol. The
        default, None, leaves the choice to ``reset``'s seed.
        """
        return None

    def resolve_action(self, action: Any) -> int:
        """Map an index or an admissible action string to its index, or raise ValueError."""
        actions = self.admissible_actions()
        if isinstance(action, str):
            if action in actions:
                return actions.index(action)
        elif isinstance(action, SupportsInt) and not isinstance(action, bool):
            index = int(action)
            if 0 <= index < len(actions) and index == action:
                return index
        raise ValueError(
            f"invalid action {action!r}; admissible actions are "
            f"{', '.join(repr(a) for a in actions)} (or their indices 0..{len(actions) - 1})"
        )

    def optimal_actions(self) -> list[str]:
        """Admissible actions on a shortest path to success from the current state."""
        raise NotImplementedError(f"{type(self).__name__} has no expert")

    def expert_action(self) -> str:
        """One optimal action (the first in admissible order)."""
        return self.optimal_actions()[0]
