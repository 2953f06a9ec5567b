"""The ActionPrior interface: k candidate actions for each of a batch of states."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..seeding import stable_seed


@dataclass(frozen=True)
class PriorQuery:
    """One state to propose actions for."""

    prompt: str
    actions: tuple[str, ...]
    #: optimal admissible actions from the env's expert (only filled for priors that use it)
    optimal: tuple[str, ...] = ()


@dataclass
class PriorStats:
    calls: int = 0  # propose() calls (one per batch step)
    queries: int = 0  # states asked about
    cache_hits: int = 0  # states answered from the proposal cache
    model_queries: int = 0  # states sent to the model
    tokens: int = 0  # tokens generated or scored by the model
    unmatched: int = 0  # completions that matched no admissible action
    seconds: float = 0.0  # wall time inside the model

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.queries if self.queries else 0.0


@dataclass
class ActionPrior:
    """Base class. ``propose(queries, k)`` returns, per query, a list of admissible actions.

    Priors that sample return exactly ``k`` actions with repetition (duplicates count as often
    as drawn: that is how p_LLM enters the posterior, Proposition 1). ``uniform`` returns every
    admissible action once. Every proposal is a pure function of (prior settings, prompt, seed).
    """

    seed: int = 0
    stats: PriorStats = field(default_factory=PriorStats)
    name: str = "prior"
    uses_expert: bool = False

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass
class UniformPrior(ActionPrior):
    """Every admissible action, once: the candidate set of the plain ``dqn``/``cql`` baselines."""

    name: str = "uniform"

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        self.stats.calls += 1
        self.stats.queries += len(queries)
        return [list(q.actions) for q in queries]


@dataclass
class UniformMixPrior(ActionPrior):
    """(1-eps)·p + eps·uniform: each proposal of ``base`` is replaced, with probability ``eps``,
    by a uniformly random admissible action (deterministic per prompt, seed and draw index)."""

    base: ActionPrior | None = None
    eps: float = 0.0

    def __post_init__(self) -> None:
        assert self.base is not None
        self.stats = self.base.stats
        self.name = self.base.name
        self.uses_expert = self.base.uses_expert

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        proposals = self.base.propose(queries, k)
        mixed = []
        for query, actions in zip(queries, proposals):
            rng = random.Random(stable_seed("uniform-mix", self.seed, self.eps, query.prompt))
            row = []
            for action in actions:
                replace = rng.random() < self.eps
                uniform_choice = rng.choice(query.actions)
                row.append(uniform_choice if replace else action)
            mixed.append(row)
        return mixed

    def describe(self) -> str:
        return f"{self.base.describe()} mixed with uniform (eps={self.eps})"
