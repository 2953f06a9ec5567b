"""``llmrl prior probe``: how good is a prior? Its proposals and probabilities on a few states.

States come from seeded episodes that follow the env's expert half of the time and a random
admissible action otherwise, so they cover the start and the middle of the task. For each
state and prior we report p(optimal) -- the prior's probability mass on the expert's optimal
actions (exact for score mode, uniform and expert-mix; the share of the k proposals for sample
mode) -- and whether an optimal action is among the k proposals. Latency is the wall time of
one ``propose`` call on a batch of states, cache off, after the model is loaded.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ..envs import make
from ..errors import UserError
from ..seeding import stable_seed
from .base import ActionPrior, PriorQuery, frequencies
from .prompts import build_query, history_line


def probe_states(env_name: str, n: int, seed: int = 0, **env_kwargs) -> list[PriorQuery]:
    """n distinct prior queries (with their optimal actions) from expert/random episodes."""
    env = make(env_name, **env_kwargs)
    rng = random.Random(stable_seed("probe", seed))
    queries: dict[str, PriorQuery] = {}
    for episode in range(50 * n):
        obs, _ = env.reset(seed=stable_seed("probe-episode", seed, episode) % 2**31)
        history: list[str] = []
        done = False
        while not done and len(queries) < n:
            try:
                optimal = tuple(env.optimal_actions())
            except NotImplementedError:
                raise UserError(f"{env_name} has no expert to probe a prior against") from None
            query = build_query(env_name, env.instruction, obs["text"], obs["actions"],
                                history, optimal)
            queries.setdefault(query.prompt, query)
            action = optimal[0] if optimal and rng.random() < 0.5 else rng.choice(obs["actions"])
            history.append(history_line(obs["text"], action))
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        if len(queries) >= n:
            break
    return list(queries.values())


@dataclass
class ProbeResult:
    label: str
    proposals: list[list[str]]
    probs: list[list[float]]
    batch_seconds: list[float] = field(default_factory=list)
    #: sample mode: completions that named no admissible action (of ``len(proposals) * k``)
    unmatched: int = 0

    def p_optimal(self, queries: list[PriorQuery]) -> list[float]:
        return [sum(p for a, p in zip(q.actions, row) if a in q.optimal)
                for q, row in zip(queries, self.probs)]

    def optimal_in_k(self, queries: list[PriorQuery]) -> list[bool]:
        return [any(a in q.optimal for a in row) for q, row in zip(queries, self.proposals)]


def probe_prior(label: str, prior: ActionPrior, queries: list[PriorQuery], k: int,
                batch: int = 16) -> ProbeResult:
    prior.warm_up()
    proposals, seconds = [], []
    unmatched = prior.stats.unmatched
    for start in range(0, len(queries), batch):
        chunk = queries[start : start + batch]
        began = time.perf_counter()
        proposals += prior.propose(chunk, k)
        seconds.append(time.perf_counter() - began)
    unmatched = prior.stats.unmatched - unmatched
    if prior.exact_distribution:  # score mode, uniform, expert-mix
        probs = prior.distribution(queries, k)
    else:  # sample mode: the share of the k proposals just drawn (not drawn and counted again)
        probs = [frequencies(q.actions, row) for q, row in zip(queries, proposals)]
    return ProbeResult(label, proposals, probs, seconds, unmatched)


def parse_probe_spec(spec: str) -> tuple[str, str]:
    """'local:score' -> ('local', 'score'); 'expert-mix:0.5' -> ('expert-mix:0.5', 'sample')."""
    if spec.startswith("expert-mix") or ":" not in spec:
        return spec, "sample"
    backend, _, mode = spec.partition(":")
    return backend, mode
