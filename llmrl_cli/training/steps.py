"""The named data of one batch step: an env of the batch (``Slot``), a state to decide on
(``StepState``), the prior's and Q-function's decision on it (``Decision``) and a transition
waiting for its next state's candidates (``Pending``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from ..envs import TextEnv


@dataclass
class StepState:
    """A state the prior proposes for and the Q-function scores."""

    obs: dict  # {"text": the state's description, "actions": its admissible actions}
    history: deque  # the prompt's history lines (``envs.base.history_line``)
    optimal: tuple[str, ...]  # the env expert's optimal actions (empty: not tracked)
    #: the episode's (instruction, task named in the Q input): envs like ALFWorld change them at
    #: every reset, so they travel with each state
    context: tuple[str, str | None]
    #: count whether its candidates held an optimal action (training states; not evaluation
    #: or bootstrap states)
    counted: bool = False

    def as_saved(self) -> tuple:
        """The state as a checkpoint holds it: (obs, history, optimal, context)."""
        return self.obs, self.history, self.optimal, self.context


@dataclass
class Pending:
    """A transition whose next state's candidates are not known yet (C(s') of its TD target)."""

    features: torch.Tensor | None  # the chosen (state, action)'s encoder features
    reward: float
    done: bool


@dataclass
class Decision:
    """A state's candidates (the prior's k proposals, or every admissible action), their
    features and Q-values (for ``llm``: how often each was proposed), and whether they held
    an optimal action (None: not counted)."""

    candidates: list[str]
    features: torch.Tensor
    q: torch.Tensor
    optimal_hit: bool | None


@dataclass
class Slot:
    """One environment of the batch and its episode in progress."""

    env: TextEnv
    history_length: int = 3  # observation/action lines the prompt keeps
    obs: dict = field(default_factory=dict)
    history: deque = field(default_factory=deque)
    episode_return: float = 0.0
    episode_len: int = 0
    reset_seed: int = 0
    pending: Pending | None = None
    bootstrap: StepState | None = None  # the last state of a truncated episode
    waited: int = 0  # batch steps this env has waited for the model while others stepped
    options: dict | None = None  # the reset options of the episode under way
    #: buffer_balance: the episode's transitions, held until it ends and its admission is known
    transitions: list = field(default_factory=list)
    #: buffer_balance: a truncated episode's transitions and success, held until its last
    #: transition is completed by the bootstrap state's candidates
    ended: tuple[list, bool] | None = None

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_length)

    def reset(self, seed: int, options: dict | None = None) -> None:
        self.obs, _ = self.env.reset(seed=seed, options=options)
        self.history.clear()
        self.transitions.clear()
        self.episode_return, self.episode_len = 0.0, 0
        self.reset_seed, self.options = seed, options
