"""What every LLM prior backend shares: the two modes, the proposal cache and the counters.

``sample`` (the paper's pmap): k completions per state, cut at the first newline, each
projected onto an admissible action (``--projection``).

``score`` (the paper's pdist): p_LLM(a | s) = softmax over the admissible actions of the summed
token log-probabilities of " {a}" after the prompt; k proposals are then drawn from p_LLM
(seeded per state, so duplicates appear as often as the LLM favours them).

Debiased scoring (``permutations`` N > 1, ours): small models put most of the mass on whichever
action is listed first. With N orderings of the admissible list in the prompt -- the first N
rotations of the env's order while N <= |A| (so every action is listed first equally often when
N = |A|), then seeded shuffles -- p_LLM is the mean of the N distributions. N = 1 is the
paper's behaviour.

A backend implements ``_generate(prompts, k)`` (raw completions) and ``_score(prompts,
candidates)`` (summed log-probs); this class caches both. Cache keys hold the backend, model,
prompt, mode and decoding settings; sampled completions also hold k and the seed. Scores are
deterministic, so their key has neither: a score cached by one seed serves every seed.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from ..seeding import stable_seed
from .base import ActionPrior, PriorQuery, frequencies
from .cache import ProposalCache, cache_key
from .projection import project

MODES = ("sample", "score")


def orderings(actions: tuple[str, ...], n: int, prompt: str) -> list[tuple[str, ...]]:
    """The n orderings of ``actions`` a debiased score averages over (the first is the env's)."""
    orders = [actions[i:] + actions[:i] for i in range(min(n, len(actions)))]
    rng = random.Random(stable_seed("orderings", prompt))
    while len(orders) < n:
        shuffled = list(actions)
        rng.shuffle(shuffled)
        orders.append(tuple(shuffled))
    return orders


def softmax(logps: list[float]) -> list[float]:
    top = max(logps)
    weights = [math.exp(v - top) for v in logps]
    total = sum(weights)
    return [w / total for w in weights]


@dataclass
class LLMPrior(ActionPrior):
    """Base class of the ``local`` and ``vllm`` backends (see the module docstring)."""

    backend: str = "llm"
    model: str = ""
    mode: str = "sample"
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 10
    projection: str = "default"
    chat_template: bool = False
    permutations: int = 1
    cache: ProposalCache | None = None
    has_model: bool = True

    def describe(self) -> str:
        if self.mode == "score":
            extra = f", averaged over {self.permutations} orderings" if self.permutations > 1 else ""
            return f"{self.backend} {self.model} score mode{extra}"
        return (f"{self.backend} {self.model} sample mode (T={self.temperature}, "
                f"top_p={self.top_p}, projection={self.projection})")

    # -- backend hooks --------------------------------------------------------------------
    def _generate(self, prompts: list[str], k: int) -> list[list[str]]:
        """k completions per prompt, each cut at its first newline."""
        raise NotImplementedError

    def _score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """Summed token log-prob of " {candidate}" after each prompt."""
        raise NotImplementedError

    # -- cached calls ---------------------------------------------------------------------
    def _sample_key(self, prompt: str, k: int) -> str:
        return cache_key(backend=self.backend, model=self.model, prompt=prompt, mode="sample",
                         k=k, temperature=self.temperature, top_p=self.top_p,
                         max_new_tokens=self.max_new_tokens, chat=self.chat_template,
                         seed=self.seed)

    def _score_key(self, prompt: str, candidates: tuple[str, ...]) -> str:
        return cache_key(backend=self.backend, model=self.model, prompt=prompt, mode="score",
                         candidates=list(candidates), chat=self.chat_template)

    def _cached(self, keys: list[str], jobs: dict[str, object], compute) -> dict:
        """Look ``keys`` up; run ``compute`` on the jobs (key -> input) the cache lacks.

        Counts every key as one query, and as a cache hit when it was found without the model.
        """
        found = self.cache.get_many(keys) if self.cache is not None else {}
        self.stats.calls += 1
        self.stats.queries += len(keys)
        self.stats.cache_hits += sum(key in found for key in keys)
        todo = {key: job for key, job in jobs.items() if key not in found}
        if todo:
            started = time.perf_counter()
            self.stats.model_queries += len(todo)
            new = dict(zip(todo, compute(list(todo.values()))))
            self.stats.seconds += time.perf_counter() - started
            if self.cache is not None:
                self.cache.put_many(new)
            found.update(new)
        return found

    def completions(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        """Raw (cut, unprojected) completions per query, through the proposal cache."""
        keys = [self._sample_key(q.prompt, k) for q in queries]
        jobs = {key: q.prompt for key, q in zip(keys, queries)}
        found = self._cached(keys, jobs, lambda prompts: self._generate(prompts, k))
        return [found[key] for key in keys]

    def scores(self, queries: list[PriorQuery]) -> list[list[list[float]]]:
        """Per query, per ordering: summed log-probs of its actions (in the env's order)."""
        plan = []  # per query: [(key, order)]
        jobs = {}
        for q in queries:
            row = []
            for order in orderings(q.actions, self.permutations, q.prompt):
                prompt = q.prompt_for(order)
                key = self._score_key(prompt, q.actions)
                jobs[key] = (prompt, q.actions)
                row.append((key, order))
            plan.append(row)
        keys = [key for row in plan for key, _ in row]

        found = self._cached(keys, jobs, lambda items: self._score(
            [prompt for prompt, _ in items], [list(actions) for _, actions in items]))
        return [[found[key] for key, _ in row] for row in plan]

    # -- ActionPrior ----------------------------------------------------------------------
    def distribution(self, queries: list[PriorQuery], k: int) -> list[list[float]]:
        if self.mode == "sample":
            return super().distribution(queries, k)
        out = []
        for q, per_order in zip(queries, self.scores(queries)):
            probs = [softmax(logps) for logps in per_order]
            out.append([sum(p[i] for p in probs) / len(probs) for i in range(len(q.actions))])
        return out

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        if self.mode == "score":
            proposals = []
            for q, probs in zip(queries, self.distribution(queries, k)):
                rng = random.Random(stable_seed("score-draw", self.seed, q.prompt))
                proposals.append(rng.choices(q.actions, weights=probs, k=k))
            return proposals
        proposals = []
        for q, texts in zip(queries, self.completions(queries, k)):
            rng = torch.Generator().manual_seed(stable_seed("unmatched", self.seed, q.prompt))
            row = []
            for text in texts:
                action = project(text, list(q.actions), self.projection)
                if action is None:  # no information in the text: a uniformly random action
                    self.stats.unmatched += 1
                    action = q.actions[int(torch.randint(len(q.actions), (1,), generator=rng))]
                row.append(action)
            proposals.append(row)
        return proposals


__all__ = ["LLMPrior", "MODES", "orderings", "softmax", "frequencies"]
