"""Which envs step in a batch step when envs may run ahead (``run_ahead``), as a pure function.

With several envs, lockstep makes every env wait for each model call, though most steps find
their proposals in the cache. Running ahead, an env whose prompt this run has not asked about
yet waits (at most ``limit`` batch steps) while the envs whose prompts were asked before step
on from the cache, so that a later model call gathers the new prompts of more envs.
"""

from __future__ import annotations

from collections.abc import Sequence


def run_ahead_step(asked: Sequence[bool], waited: Sequence[int], limit: int
                   ) -> tuple[list[bool], list[int], bool]:
    """For envs whose prompts were ``asked`` before (or not) and which have ``waited`` that many
    batch steps: which envs step now, each env's new wait count, and whether only some step
    (a step run ahead). All step together when all or none were asked, or when an env that
    was not has already waited ``limit`` steps."""
    if all(asked) or not any(asked) or max(w for w, a in zip(waited, asked) if not a) >= limit:
        stepping = [True] * len(asked)
    else:
        stepping = list(asked)
    return stepping, [0 if s else w + 1 for s, w in zip(stepping, waited)], not all(stepping)
