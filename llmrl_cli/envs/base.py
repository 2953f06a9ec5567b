"""The text-environment interface every llmrl environment follows.

An observation is ``{"text": str, "actions": list[str]}``: the state description and the
admissible actions. ``env.instruction`` is the task sentence. ``step`` accepts an index into
``obs["actions"]`` or one of those strings; anything else raises ``ValueError``.
"""

from __future__ import annotations

import string
from typing import Any, SupportsInt

import gymnasium as gym
from gymnasium import spaces

#: Characters a text observation may contain (gymnasium's ``Text`` space needs a charset).
TEXT_CHARSET = frozenset(string.printable)
MAX_TEXT = 8192


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

    def admissible_actions(self) -> list[str]:
        raise NotImplementedError

    @property
    def feature_task(self) -> str | None:
        """The task the Q-network's input names beside each (state, action), or None for envs
        with one fixed task (see ``encoders.format_pair``)."""
        return None

    def q_input(self, state: str, action: str, task: str | None = None) -> str:
        """The Q-network's input text for one (state, action) candidate, as the paper's
        ``feat_generate`` writes it (``encoders.format_pair``); ``task``: the Q input's task
        name (``feature_task``, or CQL's ``q_text_task``)."""
        from ..encoders import format_pair

        return format_pair(state, action, task)

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
