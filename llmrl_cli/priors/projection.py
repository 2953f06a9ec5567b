"""Projection of a free-text LLM completion onto one admissible action.

``paper`` (the default): the paper's ``process_text2action`` (value-based/train_overcooked.py:
64-75) -- the admissible action whose text occurs most often (case-insensitive substring count)
in the output; ties go to the later action; when nothing matches, every count is 0 and the tie
rule returns the last admissible action.

``normalised`` (ours): normalise case, punctuation and spaces, then (1) an exact match, else
(2) the longest admissible action that appears in the output as whole words (earliest mention
on ties), else (3) the action sharing the largest fraction of its words with the output (first
in admissible order on ties). If no word is shared the completion carries no information and
``None`` is returned; the prior then substitutes a uniformly random admissible action.
"""

from __future__ import annotations

import re

PROJECTIONS = ("paper", "normalised")
#: names that results written by earlier llmrl versions use for a rule
LEGACY_PROJECTIONS = {"default": "normalised"}
_WORD = re.compile(r"[a-z0-9]+")


def project_paper(text: str, actions: list[str]) -> str:
    best, best_count = actions[-1], -1
    lowered = text.lower()
    for action in actions:
        count = lowered.count(action.lower())
        if count >= best_count:
            best, best_count = action, count
    return best


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def mentions_any(text: str, actions: list[str]) -> bool:
    """Whether any admissible action occurs in ``text`` (case-insensitive substring)."""
    lowered = text.lower()
    return any(action.lower() in lowered for action in actions)


def project_normalised(text: str, actions: list[str]) -> str | None:
    norm_text = _normalise(text)
    norms = [_normalise(a) for a in actions]
    for action, norm in zip(actions, norms):
        if norm and norm == norm_text:
            return action
    padded = f" {norm_text} "
    mentioned = [
        (-len(norm), padded.index(f" {norm} "), i)
        for i, norm in enumerate(norms)
        if norm and f" {norm} " in padded
    ]
    if mentioned:
        return actions[min(mentioned)[2]]
    words = set(norm_text.split())
    best, best_score = None, 0.0
    for action, norm in zip(actions, norms):
        action_words = norm.split()
        if not action_words:
            continue
        score = sum(w in words for w in action_words) / len(action_words)
        if score > best_score:
            best, best_score = action, score
    return best


def project(text: str, actions: list[str], rule: str) -> str | None:
    """Project ``text`` onto ``actions`` with rule ``paper`` or ``normalised``."""
    if rule == "paper":
        return project_paper(text, actions)
    return project_normalised(text, actions)
