"""Draws per visit: whether a revisited prompt gets new proposals or the ones it got before.

The paper's scripts differ here. Only the Overcooked Tomato script memoises the proposals of
each prompt for the whole run (value-based/train_overcooked.py:301-316, keyed by history and
observation); the ALFWorld, Salad and CQL scripts ask the LLM again at every visit of a state
(train_alfworld.py:317-327, test_overcooked_salad.py:304-305, CQL_overcook_salad.py
``get_thought_actions``), so a state whose first k proposals miss a good action may get it at a
later visit.

``memo``: every visit of a prompt reads draw block 0, its first k draws.
``fresh``: the n-th visit of a prompt (n = 0, 1, ...) reads block n of that prompt's sequence
of draws, so it gets new i.i.d. proposals. The sequence is a pure function of (prior settings,
prompt, seed, block), which is what the proposal cache stores: a cache never changes which
draws a visit sees, and a run stays reproducible and resumable (the counts are checkpointed).

Visits are counted per *stream*: training is one stream; each evaluation is its own, counted
from 0 at its start, so an evaluation draws the same whether it runs alone or beside training,
and training draws the same whatever its evaluations asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from .base import PriorQuery

DRAWS = ("fresh", "memo")
TRAIN_STREAM = "train"


def eval_stream(episode: int) -> str:
    """The stream of the evaluation at eval point ``episode``."""
    return f"eval@{episode}"


class VisitCounter:
    """Numbers the visits of each prompt within each stream (see the module docstring)."""

    def __init__(self, draws: str = "fresh") -> None:
        if draws not in DRAWS:
            raise ValueError(f"draws must be one of {', '.join(DRAWS)}, got {draws!r}")
        self.draws = draws
        self.counts: dict[tuple[str, bytes], int] = {}

    @staticmethod
    def _digest(prompt: str) -> bytes:
        return hashlib.blake2b(prompt.encode(), digest_size=16).digest()

    def number(self, queries: Sequence[PriorQuery], streams: Sequence[str]) -> list[PriorQuery]:
        """The queries with their draw block set: this visit's number under ``fresh`` (queries
        of one prompt in one call count as successive visits, in order), 0 under ``memo``."""
        if self.draws == "memo":
            return list(queries)
        out = []
        for query, stream in zip(queries, streams, strict=True):
            key = (stream, self._digest(query.prompt))
            visit = self.counts.get(key, 0)
            self.counts[key] = visit + 1
            out.append(dataclasses.replace(query, draw=visit))
        return out

    def forget(self, stream: str) -> None:
        """Drop a stream's counts (an evaluation that ended, or one about to be played again)."""
        self.counts = {key: n for key, n in self.counts.items() if key[0] != stream}

    def state_dict(self) -> dict:
        return {"draws": self.draws, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.counts = dict(state["counts"])
