"""A run's evaluations: ``eval_episodes`` episodes played with the evaluation policy.

Their env seeds and random stream depend only on the run's seed and the eval point, so an
evaluation plays the same episodes whether it runs alone (training waits: the paper's pattern)
or overlaps training with a frozen copy of the Q-function (``eval_overlap``). An evaluation is a
generator: it yields the states of its episodes still running, is sent their decisions, and
returns the mean return and success; the loop that drives it decides whether its states share a
batch with training's.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch

from ..envs.base import history_line
from ..priors.draws import VisitCounter, eval_stream
from ..seeding import stable_seed
from .env_workers import step_envs
from .steps import Decision, Slot, StepState

#: decisions for a batch of states: (states, agent per state or None, visit stream per state)
Decide = Callable[[list[StepState], list | None, list[str] | None], list[Decision]]


@dataclass
class Evaluation:
    """An evaluation under way: ``steps`` (``Evaluator.episodes``) yields its episodes' states
    (``states``, awaiting decisions); ``start`` holds the CSV row's training fields at its eval
    point ``episode``; ``agent`` is the Q-function it plays -- a frozen copy when it overlaps
    training (``overlapped``), else the run's agent."""

    episode: int
    start: dict
    agent: object
    overlapped: bool
    steps: Generator
    states: list = field(default_factory=list)

    @property
    def stream(self) -> str:
        """The visit stream its prior queries are numbered in (``priors/draws.py``)."""
        return eval_stream(self.episode)


class Evaluator:
    """Plays the evaluations of the run with seed ``seed`` on ``slots`` (its evaluation envs,
    whose episodes step together), ``episodes`` episodes each, choosing actions by ``choose``
    (decision, policy, random generator) under ``policy``; ``state_of`` turns a slot into the
    state to decide on; ``visits`` numbers prior queries per stream."""

    def __init__(self, seed: int, episodes: int, policy: str, slots: list[Slot],
                 state_of: Callable[[Slot], StepState],
                 choose: Callable[[Decision, str, torch.Generator], int],
                 visits: VisitCounter) -> None:
        self.seed, self.n_episodes, self.policy = seed, episodes, policy
        self.slots, self.state_of, self.choose, self.visits = slots, state_of, choose, visits

    def episodes(self, episode: int) -> Generator[list[StepState], list[Decision],
                                                    tuple[float, float]]:
        """The evaluation at eval point ``episode``, step by step (module docstring)."""
        rng = torch.Generator().manual_seed(stable_seed(self.seed, "eval", episode))
        returns, successes = [], []
        for start in range(0, self.n_episodes, len(self.slots)):
            live = self.slots[: min(len(self.slots), self.n_episodes - start)]
            for i, slot in enumerate(live):
                slot.reset(stable_seed(self.seed, "eval-episode", start + i) % 2**31,
                           slot.env.episode_options("eval", start + i, self.seed))
            running = list(live)
            finished: dict[int, tuple[float, bool]] = {}
            while running:
                decisions = yield [self.state_of(s) for s in running]
                actions = [d.candidates[self.choose(d, self.policy, rng)] for d in decisions]
                results = step_envs([slot.env for slot in running], actions)
                still = []
                for slot, action, result in zip(running, actions, results):
                    obs, reward, terminated, truncated, info = result
                    slot.history.append(history_line(slot.obs["text"], action))
                    slot.obs = obs
                    slot.episode_return += reward
                    if terminated or truncated:
                        finished[id(slot)] = (slot.episode_return, bool(info.get("success")))
                    else:
                        still.append(slot)
                running = still
            for slot in live:
                ret, success = finished[id(slot)]
                returns.append(ret)
                successes.append(float(success))
        return sum(returns) / len(returns), sum(successes) / len(successes)

    def begin(self, episode: int, start: dict, agent: object, overlapped: bool) -> Evaluation:
        """Start the evaluation at ``episode``; its first states are waiting for decisions.
        Its stream's visits start afresh, so a resumed evaluation draws as it did."""
        self.visits.forget(eval_stream(episode))
        ev = Evaluation(episode, start, agent, overlapped, self.episodes(episode))
        ev.states = next(ev.steps)
        return ev

    def advance(self, ev: Evaluation, decisions: list[Decision]) -> tuple[float, float] | None:
        """Hand ``ev`` the decisions on its states: None while its episodes run, else its mean
        return and success."""
        try:
            ev.states = ev.steps.send(decisions)
            return None
        except StopIteration as end:
            self.visits.forget(ev.stream)
            return end.value

    def play(self, episode: int, decide: Decide) -> tuple[float, float]:
        """Play the evaluation at ``episode`` alone with the run's agent (``decide``'s default);
        its mean return and success."""
        ev = self.begin(episode, {}, None, overlapped=False)
        while True:
            result = self.advance(ev, decide(ev.states, None, [ev.stream] * len(ev.states)))
            if result is not None:
                return result
