"""The ActionPrior interface: k candidate actions for each of a batch of states."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..seeding import stable_seed

#: Where the admissible-action list goes in a query's ``template``.
ACTIONS_SLOT = "\x00ACTIONS\x00"
#: how a prompt writes the admissible actions: "python" = ['a', 'b'] (the Overcooked
#: scripts' str(list)), "comma" = a, b (LLF-Bench's ALFWorld observation)
LIST_STYLES = ("python", "comma")


def format_actions(actions: Sequence[str], style: str) -> str:
    """The admissible actions as a prompt writes them (``LIST_STYLES``)."""
    return ", ".join(actions) if style == "comma" else str(list(actions))


@dataclass(frozen=True)
class PriorQuery:
    """One state to propose actions for.

    ``prompt`` lists the admissible actions in the env's order; ``template`` is the same prompt
    with ``ACTIONS_SLOT`` in place of that list, so a prior can ask about other orderings
    (``prompt_for``). ``optimal`` holds the env expert's optimal actions, the first being the
    expert's own choice; it is filled where the env has an expert (``expert-mix`` needs it).

    ``draw`` numbers the block of k draws this visit reads from the prompt's sequence of draws
    (``priors/draws.py``): always 0 when proposals are memoised per prompt, the visit's number
    under fresh draws. Every prior seeds its randomness with it, so the n-th visit of a prompt
    gets new draws, the same ones in every run of that seed.
    """

    prompt: str
    actions: tuple[str, ...]
    optimal: tuple[str, ...] = ()
    template: str = ""
    draw: int = 0
    list_style: str = "python"

    def seed(self, *parts: object) -> int:
        """A seed from ``parts``, the prompt and the draw block (block 0 adds nothing, so a
        first visit draws as it did before blocks existed)."""
        return stable_seed(*parts, self.prompt, *((self.draw,) if self.draw else ()))

    def prompt_for(self, order: Sequence[str]) -> str:
        """The prompt with the admissible actions listed in ``order``."""
        if tuple(order) == self.actions:
            return self.prompt
        if not self.template:
            raise ValueError("this query has no template, so its actions cannot be reordered")
        return self.template.replace(ACTIONS_SLOT, format_actions(order, self.list_style))

    @property
    def expert(self) -> str:
        if not self.optimal:
            raise ValueError("this query carries no expert action (the env has no expert)")
        return self.optimal[0]


@dataclass
class PriorStats:
    calls: int = 0  # propose() calls (one per batch step)
    queries: int = 0  # states asked about
    cache_hits: int = 0  # states answered from the proposal cache
    model_queries: int = 0  # states sent to the model
    tokens: int = 0  # tokens generated or scored by the model
    prompt_tokens: int = 0  # prompt tokens prefilled (local backend)
    reused_tokens: int = 0  # of those, served from the prefix KV cache instead of the model
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
    admissible action once. Every proposal is a pure function of (prior settings, prompt, seed,
    draw block).
    """

    seed: int = 0
    stats: PriorStats = field(default_factory=PriorStats)
    name: str = "prior"
    uses_expert: bool = False
    #: whether a query the cache lacks costs a model call (LLM priors), so that batching
    #: queries across envs pays
    has_model: bool = False

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        raise NotImplementedError

    @property
    def exact_distribution(self) -> bool:
        """Whether ``distribution`` is known exactly rather than the share of k proposals."""
        return type(self).distribution is not ActionPrior.distribution

    def warm_up(self) -> None:
        """Load the model / reach the server now, so the first ``propose`` is not slowed."""

    def distribution(self, queries: list[PriorQuery], k: int) -> list[list[float]]:
        """p(action | state) over each query's admissible actions, in their order.

        By default the empirical share of each action among the k proposals; priors that know
        their distribution exactly (score mode, uniform, expert-mix) override this.
        """
        return [frequencies(q.actions, row) for q, row in zip(queries, self.propose(queries, k))]

    def describe(self) -> str:
        return self.name


def frequencies(actions: Sequence[str], proposals: Sequence[str]) -> list[float]:
    counts = Counter(proposals)
    return [counts[a] / len(proposals) for a in actions]


def fit_length(actions: Sequence[str], length: int) -> list[str]:
    """``actions`` cut to ``length``, or repeated in order until ``length`` (the paper's DQN
    baselines' candidate list: value-based/train_alfworld.py:293-315, 30 on ALFWorld)."""
    repeats = -(-length // len(actions))
    return (list(actions) * repeats)[:length]


@dataclass
class UniformPrior(ActionPrior):
    """Every admissible action, once: the candidate set of the plain ``dqn``/``cql`` baselines.

    ``length`` > 0 fits the list to that many entries (``fit_length``), as the paper's ALFWorld
    DQN baseline does; 0 keeps every admissible action once."""

    name: str = "uniform"
    length: int = 0

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        self.stats.calls += 1
        self.stats.queries += len(queries)
        if self.length:
            return [fit_length(q.actions, self.length) for q in queries]
        return [list(q.actions) for q in queries]

    def distribution(self, queries: list[PriorQuery], k: int) -> list[list[float]]:
        return [[1 / len(q.actions)] * len(q.actions) for q in queries]


@dataclass
class ExpertMixPrior(ActionPrior):
    """A synthetic prior of known quality: each of the k proposals is the env expert's action
    with probability 1-eps and a uniformly random admissible action otherwise, so
    p(a) = (1-eps)·[a = expert] + eps/|A|. Needs an env with an expert (``optimal_actions``)."""

    name: str = "expert-mix"
    eps: float = 0.5
    uses_expert: bool = True

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        self.stats.calls += 1
        self.stats.queries += len(queries)
        proposals = []
        for query in queries:
            rng = random.Random(query.seed("expert-mix", self.seed, self.eps))
            row = []
            for _ in range(k):
                explore = rng.random() < self.eps
                uniform_choice = rng.choice(query.actions)
                row.append(uniform_choice if explore else query.expert)
            proposals.append(row)
        return proposals

    def distribution(self, queries: list[PriorQuery], k: int) -> list[list[float]]:
        return [[(1 - self.eps) * (a == q.expert) + self.eps / len(q.actions) for a in q.actions]
                for q in queries]

    def describe(self) -> str:
        return f"expert-mix (expert with probability {1 - self.eps:g}, else uniform)"


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
        self.has_model = self.base.has_model

    @property
    def exact_distribution(self) -> bool:
        return self.base.exact_distribution

    def warm_up(self) -> None:
        self.base.warm_up()

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        proposals = self.base.propose(queries, k)
        mixed = []
        for query, actions in zip(queries, proposals):
            rng = random.Random(query.seed("uniform-mix", self.seed, self.eps))
            row = []
            for action in actions:
                replace = rng.random() < self.eps
                uniform_choice = rng.choice(query.actions)
                row.append(uniform_choice if replace else action)
            mixed.append(row)
        return mixed

    def distribution(self, queries: list[PriorQuery], k: int) -> list[list[float]]:
        return [[(1 - self.eps) * p + self.eps / len(q.actions) for p in row]
                for q, row in zip(queries, self.base.distribution(queries, k))]

    def describe(self) -> str:
        return f"{self.base.describe()} mixed with uniform (eps={self.eps})"
