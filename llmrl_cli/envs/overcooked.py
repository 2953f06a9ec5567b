"""TWOSOME's text Overcooked (the paper's Overcooked tasks) as llmrl text environments.

- ``overcooked-tomato``: TWOSOME ``Overcooked-LLMA-v4``, task 0 "tomato salad"; 5 macro-actions;
  the paper cuts episodes at 31 macro-steps.
- ``overcooked-salad``: ``Overcooked-LLMA-v3``, task 3 "lettuce-tomato salad"; 8 macro-actions;
  cut at 51 macro-steps.

One ``step`` is one macro-action (rules: ``overcooked_sim``); its reward is the original's
discounted sum over the primitive steps it took. ``terminated`` on a correct delivery (then
``info["success"]``) and on the original's 200-primitive-step limit; ``truncated`` at the
paper's cap (``horizon``). ``obs["text"]`` is the paper's state description
(``overcooked_text``), ``obs["actions"]`` the labels in macro-action order. Deterministic: the
seed changes nothing. ``optimal_actions()`` is an exact expert: the actions that start a
shortest (fewest macro-steps) plan to a correct delivery, found by search over copies of the
full simulator state and memoised per state.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from gymnasium import spaces

from .base import TextEnv, text_observation_space
from .overcooked_sim import LETTUCE_TOMATO_SALAD, TOMATO_SALAD, Layout, State
from .overcooked_text import describe, goal_phrase

_GOAL = "Your task is to serve the dish of a bowl only containing chopped {}."


class ShortestPlans:
    """Fewest macro-steps to a correct delivery, for states reached from the ones asked about.

    The graph of macro-transitions is explored forward from each new state (all of its
    reachable states, once) and distances are computed backwards from the delivering moves.
    """

    def __init__(self) -> None:
        self.edges: dict[tuple, list[tuple | None]] = {}  # per action: next key, None = success
        self.distance: dict[tuple, int] = {}

    def optimal(self, state: State) -> list[int]:
        """Indices of the macro-actions that start a shortest plan (all if none succeeds)."""
        key = state.key()
        if key not in self.edges:
            self._explore(state)
        here = self.distance.get(key)
        successors = self.edges[key]
        if here is None:
            return list(range(len(successors)))
        return [a for a, nxt in enumerate(successors)
                if (nxt is None and here == 1)
                or (nxt is not None and self.distance.get(nxt) == here - 1)]

    def steps_to_success(self, state: State) -> int | None:
        key = state.key()
        if key not in self.edges:
            self._explore(state)
        return self.distance.get(key)

    def _explore(self, state: State) -> None:
        queue = deque([state])
        self.edges[state.key()] = []
        while queue:
            current = queue.popleft()
            successors: list[tuple | None] = []
            for action in range(len(current.layout.macros)):
                nxt = current.copy()
                if nxt.run_macro(action).delivered:
                    successors.append(None)
                    continue
                nkey = nxt.key()
                successors.append(nkey)
                if nkey not in self.edges:
                    self.edges[nkey] = []
                    queue.append(nxt)
            self.edges[current.key()] = successors
        self._distances()

    def _distances(self) -> None:
        parents: dict[tuple, list[tuple]] = {}
        frontier = []
        for key, successors in self.edges.items():
            for nxt in successors:
                if nxt is None:
                    frontier.append(key)
                else:
                    parents.setdefault(nxt, []).append(key)
        distance = {key: 1 for key in frontier}
        queue = deque(frontier)
        while queue:
            key = queue.popleft()
            for parent in parents.get(key, ()):
                if parent not in distance:
                    distance[parent] = distance[key] + 1
                    queue.append(parent)
        self.distance = distance


class OvercookedText(TextEnv):
    """One Overcooked task. Option: ``horizon`` (macro-steps before truncation)."""

    layout: Layout
    default_horizon: int

    def __init__(self, horizon: int | None = None) -> None:
        self.horizon = self.default_horizon if horizon is None else int(horizon)
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        foods = "tomato and lettuce" if len(self.layout.knives) == 2 else "tomato"
        self.instruction = _GOAL.format(foods)
        self.observation_space = text_observation_space()
        self.action_space = spaces.Discrete(len(self.layout.macros))
        self._plans = ShortestPlans()
        self._state = State.start(self.layout)
        self._text, self._actions = describe(self._state)
        self._macro_steps = 0

    def _obs(self) -> dict:
        return {"text": self._text, "actions": list(self._actions)}

    def admissible_actions(self) -> list[str]:
        return list(self._actions)

    @property
    def state(self) -> State:
        """A copy of the full simulator state."""
        return self._state.copy()

    def goal_phrase(self) -> str:
        """The phrase the paper's text ended with ("To serve the dish ..., you should first")."""
        return goal_phrase(self._state)

    # -- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = State.start(self.layout)
        self._text, self._actions = describe(self._state)
        self._macro_steps = 0
        return self._obs(), {"success": False, "primitive_steps": 0}

    def step(self, action: Any):
        index = self.resolve_action(action)
        result = self._state.run_macro(index)
        self._macro_steps += 1
        self._text, self._actions = describe(self._state)
        terminated = result.done
        truncated = not terminated and self._macro_steps >= self.horizon
        info = {"success": result.delivered, "macro_action_steps": len(result.primitive_rewards),
                "primitive_rewards": result.primitive_rewards,
                "primitive_steps": self._state.steps}
        return self._obs(), result.reward, terminated, truncated, info

    def render(self) -> str:
        return self._text

    # -- expert ---------------------------------------------------------------------------
    def optimal_actions(self) -> list[str]:
        return [self._actions[i] for i in self._plans.optimal(self._state)]

    def steps_to_success(self) -> int | None:
        """Fewest macro-steps to a correct delivery from here (None: impossible)."""
        return self._plans.steps_to_success(self._state)


def _value_learning() -> dict[str, Any]:
    """The value-learning settings both Overcooked scripts share (value-based/readme.md:44-46;
    train_overcooked.py:835-842): batch 64, buffer 4000, soft target tau 0.005, 40 gradient
    steps every 5 episodes, eval every 20 episodes over 10 episodes, alpha 10 as a multiplier
    (= 0.1 here). ``feature_norm`` is ours (see DQNConfig.feature_norm)."""
    return {"batch_size": 64, "buffer_size": 4000, "target_update": "soft", "tau": 0.005,
            "train_every": 5, "train_iters": 40, "eval_every": 20, "eval_episodes": 10,
            "alpha": 0.1, "feature_norm": True}


class OvercookedTomato(OvercookedText):
    """Tomato salad (TWOSOME Overcooked-LLMA-v4, task 0), cap 31 macro-steps."""

    layout = TOMATO_SALAD
    default_horizon = 31
    # the paper's wording (value-based/train_overcooked.py)
    action_count = "5"
    question = ("To serve the dish of a bowl containing only chopped tomatoes, what action "
                "should you take next?")
    # train_overcooked.py: 3 history lines (hislen, l.29), proposals memoised per prompt
    # (l.301-316), softmax(10 Q) acting for the prior (l.380-381) and in evaluation for both
    # algos (evaluate_q, l.575-576), 200 episodes; the DQN command passes --epsilon 0.2 (l.44)
    preset = {
        "episodes": 200, "history_length": 3, "prior_draws": "memo",
        "agent": {**_value_learning(), "eval_policy": "softmax"},
        "per_algo": {
            "dqn": {"exploration": "eps-greedy", "epsilon": 0.2},
            "dqn-prior": {"exploration": "softmax"},
        },
    }


class OvercookedSalad(OvercookedText):
    """Lettuce-tomato salad (TWOSOME Overcooked-LLMA-v3, task 3), cap 51 macro-steps."""

    layout = LETTUCE_TOMATO_SALAD
    default_horizon = 51
    # the paper's wording (value-based/test_overcooked_salad.py, CQL_overcook_salad.py)
    action_count = "8"
    question = ("To serve the dish of a bowl only containing chopped tomato and lettuce, what "
                "action should you take next?")
    # test_overcooked_salad.py: 5 history lines (l.29), fresh proposals at every visit
    # (l.304-305), eps 0.2 uniform over the proposals else softmax(10 Q) (l.359-368, readme
    # l.46), greedy evaluation (l.524), 300 episodes (readme l.46), training from episode 20
    # (l.767)
    preset = {
        "episodes": 300, "history_length": 5, "prior_draws": "fresh",
        "agent": {**_value_learning(), "eval_policy": "greedy", "train_start": 20},
        "per_algo": {
            "dqn": {"exploration": "eps-greedy", "epsilon": 0.2},
            "dqn-prior": {"exploration": "eps-softmax", "epsilon": 0.2},
            # CQL_overcook_salad.py: one LLM of 20 new tokens for the dataset's proposals and the
            # evaluations (l.629-636, 769); the Q input names its --task index, 3 (l.264, 584)
            **{algo: {"max_new_tokens": 20, "q_text_task": "3"} for algo in ("cql", "cql-prior")},
        },
    }
