"""What every LLM prior backend shares: the two modes, the proposal cache and the counters.

``sample`` (the paper's pmap): k completions per state of at most ``max_new_tokens`` tokens
(10; 20 for CQL's dataset proposals), each projected onto an admissible action
(``projection``). As the paper's ``LLM_Generate_Instance`` (value-based/train_overcooked.py:
125-145, 763-764), a completion ends at the model's end-of-text token and is cut at the first
``<END>`` or ``<eos>``; it is not cut at a newline. ``stop_on_newline`` (ours) also stops and
cuts each completion at its first newline, which keeps a small model's rambling out of the
projection.

``score`` (the paper's pdist): p_LLM(a | s) = softmax over the admissible actions of the summed
token log-probabilities of " {a}" after the prompt; k proposals are then drawn from p_LLM
(seeded per state and draw block, so duplicates appear as often as the LLM favours them).

Debiased scoring (``permutations`` N > 1, ours): small models put most of the mass on whichever
action is listed first. With N orderings of the admissible list in the prompt -- the first N
rotations of the env's order while N <= |A| (so every action is listed first equally often when
N = |A|), then seeded shuffles -- p_LLM is the mean of the N distributions. N = 1 is the
paper's behaviour.

A backend implements ``_generate(jobs, k)`` (raw completions of (prompt, draw block) jobs) and
``_score(prompts, candidates)`` (summed log-probs); this class caches both. Cache keys hold the
backend, model, prompt, mode and decoding settings; sampled completions also hold k, the seed
and the draw block (``PriorQuery.draw``; ``draws.py``). Scores are deterministic, so their key
has neither: a score cached by one seed serves every seed and visit.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from ..errors import UserError
from ..seeding import stable_seed
from .base import ActionPrior, PriorQuery, frequencies
from .cache import ProposalCache, cache_key
from .projection import mentions_any, project

MODES = ("sample", "score")
#: the paper's stop words (value-based/train_overcooked.py:763-764); the model's end-of-text
#: token ends a completion too (get_stopping_criteria adds it, l.125-136)
PAPER_STOP_WORDS = ("<END>", "<eos>")


def cut_completion(text: str, stop_on_newline: bool) -> str:
    """A completion cut at its first stop word (and first newline under ``stop_on_newline``)."""
    stops = PAPER_STOP_WORDS + (("\n",) if stop_on_newline else ())
    end = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:end].strip()


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
    stop_on_newline: bool = False
    projection: str = "paper"
    chat_template: bool = False
    permutations: int = 1
    #: fresh draws: a prompt the model is asked about also draws this many blocks in all (its
    #: visit's and the next ones), so later visits find theirs in the cache; 1 = one block
    draw_pool: int = 1
    cache: ProposalCache | None = None
    has_model: bool = True

    def describe(self) -> str:
        if self.mode == "score":
            extra = f", averaged over {self.permutations} orderings" if self.permutations > 1 else ""
            return f"{self.backend} {self.model} score mode{extra}"
        newline = ", stop on newline" if self.stop_on_newline else ""
        return (f"{self.backend} {self.model} sample mode (T={self.temperature}, "
                f"top_p={self.top_p}, max_new_tokens={self.max_new_tokens}{newline}, "
                f"projection={self.projection})")

    # -- backend hooks --------------------------------------------------------------------
    def _generate(self, jobs: list[tuple[str, int]], k: int) -> list[list[str]]:
        """k completions per (prompt, draw block) job, each cut by ``cut_completion``; block b
        holds draws b*k .. b*k + k - 1 of the prompt's sequence."""
        raise NotImplementedError

    def _score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """Summed token log-prob of " {candidate}" after each prompt."""
        raise NotImplementedError

    # -- cached calls ---------------------------------------------------------------------
    def _key_parts(self) -> dict:
        """What else defines the backend's answers (a server's URL), for the cache key."""
        return {}

    def _sample_key(self, prompt: str, k: int, draw: int) -> str:
        return cache_key(backend=self.backend, model=self.model, prompt=prompt, mode="sample",
                         k=k, temperature=self.temperature, top_p=self.top_p,
                         max_new_tokens=self.max_new_tokens, chat=self.chat_template,
                         stop_on_newline=self.stop_on_newline, seed=self.seed, draw=draw,
                         **self._key_parts())

    def _score_key(self, prompt: str, candidates: tuple[str, ...]) -> str:
        return cache_key(backend=self.backend, model=self.model, prompt=prompt, mode="score",
                         candidates=list(candidates), chat=self.chat_template,
                         **self._key_parts())

    def _cached(self, keys: list[str], jobs: dict[str, object], compute, valid,
                ahead=None) -> dict:
        """Look ``keys`` up; run ``compute`` on the jobs (key -> input) the cache lacks.

        Counts every key as one query, and as a cache hit when it was found without the model.
        ``ahead(todo)``: more jobs (key -> input) to compute in the same model call and store,
        unless the cache has them (later draw blocks of the prompts asked; ``draw_pool``).
        ``valid(job, answer)``: whether an answer has the shape its job needs; a cached one
        without it is dropped and computed again, a computed one without it is an error."""
        found = self.cache.get_many(keys) if self.cache is not None else {}
        bad = [key for key, value in found.items() if not valid(jobs[key], value)]
        if bad:
            self.cache.drop(bad)
            for key in bad:
                del found[key]
        self.stats.calls += 1
        self.stats.queries += len(keys)
        self.stats.cache_hits += sum(key in found for key in keys)
        todo = {key: job for key, job in jobs.items() if key not in found}
        if todo:
            extra = {key: job for key, job in (ahead(todo) if ahead else {}).items()
                     if key not in todo}
            if extra:
                known = self.cache.get_many(list(extra)) if self.cache is not None else {}
                todo.update((key, job) for key, job in extra.items() if key not in known)
            started = time.perf_counter()
            self.stats.model_queries += sum(key in jobs for key in todo)
            new = dict(zip(todo, compute(list(todo.values()))))
            self.stats.seconds += time.perf_counter() - started
            wrong = [key for key, job in todo.items() if not valid(job, new.get(key))]
            if wrong:  # never cached: a later run would reuse it
                raise UserError(f"the {self.backend} prior gave an answer of the wrong shape, "
                                f"{str(new.get(wrong[0]))[:200]}; it was not cached")
            if self.cache is not None:
                self.cache.put_many(new)
            found.update(new)
        return found

    def completions(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        """Raw (cut, unprojected) completions per query, through the proposal cache. A prompt
        the model is asked about anyway also draws its next ``draw_pool - 1`` blocks, for its
        later visits under fresh draws (the same draws they would get one by one)."""
        keys = [self._sample_key(q.prompt, k, q.draw) for q in queries]
        jobs = {key: (q.prompt, q.draw) for key, q in zip(keys, queries)}

        def ahead(todo: dict) -> dict:
            return {self._sample_key(prompt, k, b): (prompt, b) for prompt, draw in todo.values()
                    for b in range(draw + 1, draw + self.draw_pool)}

        def valid(job, texts) -> bool:
            return (isinstance(texts, list) and len(texts) == k
                    and all(isinstance(t, str) for t in texts))

        found = self._cached(keys, jobs, lambda todo: self._generate(todo, k), valid, ahead)
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

        def valid(job, logps) -> bool:
            return (isinstance(logps, list) and len(logps) == len(job[1])
                    and all(isinstance(v, (int, float)) and not math.isnan(v) for v in logps))

        found = self._cached(keys, jobs, lambda items: self._score(
            [prompt for prompt, _ in items], [list(actions) for _, actions in items]), valid)
        return [[found[key] for key, _ in row] for row in plan]

    # -- ActionPrior ----------------------------------------------------------------------
    @property
    def exact_distribution(self) -> bool:
        return self.mode == "score"

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
                rng = random.Random(q.seed("score-draw", self.seed))
                proposals.append(rng.choices(q.actions, weights=probs, k=k))
            return proposals
        proposals = []
        for q, texts in zip(queries, self.completions(queries, k)):
            rng = torch.Generator().manual_seed(q.seed("unmatched", self.seed))
            row = []
            for text in texts:
                if not mentions_any(text, list(q.actions)):
                    self.stats.unmatched += 1  # the text names no admissible action
                action = project(text, list(q.actions), self.projection)
                if action is None:  # ``normalised``: no word shared; a uniformly random action
                    action = q.actions[int(torch.randint(len(q.actions), (1,), generator=rng))]
                row.append(action)
            proposals.append(row)
        return proposals


__all__ = ["LLMPrior", "MODES", "orderings", "softmax", "frequencies"]
