"""``llmrl prompt``: the exact texts the prior and the Q-network see in a seeded episode.

A researcher's first question about any LLM-prior result is what the LLM was asked. This plays
the first training episode of a run with that env, algo and seed (the same reset seed and
reset options the run's first episode gets) and, for each of its first N states, gives the
prompt the prior sees and the Q-network's input text for one candidate. The episode moves on
by the env expert's action where the env has one, else by the first admissible action; no
model is loaded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .config import RunConfig
from .envs import make
from .priors.prompts import build_query, history_line
from .seeding import stable_seed


@dataclass
class PromptStep:
    """One state of the walk: the prior's prompt, a Q-input text and the action taken."""

    step: int
    prompt: str
    q_input: str
    action: str
    actions: list[str]


def walk(cfg: RunConfig, steps: int) -> list[PromptStep]:
    """The first ``steps`` states of ``cfg``'s first training episode (module docstring)."""
    env = make(cfg.env, **cfg.env_kwargs)
    options = env.episode_options("train", 0, cfg.seed)
    obs, _ = env.reset(seed=stable_seed(cfg.seed, "train-episode", 0) % 2**31, options=options)
    history: deque[str] = deque(maxlen=cfg.history_length)
    out = []
    for step in range(steps):
        query = build_query(cfg.env, env.instruction, obs["text"], obs["actions"], list(history))
        try:
            action = env.optimal_actions()[0]
        except NotImplementedError:
            action = obs["actions"][0]
        task = getattr(cfg.agent, "q_text_task", "") or env.feature_task
        out.append(PromptStep(step, query.prompt, env.q_input(obs["text"], action, task),
                              action, list(obs["actions"])))
        next_obs, _, terminated, truncated, _ = env.step(action)
        history.append(history_line(obs["text"], action))
        obs = next_obs
        if terminated or truncated:
            break
    return out
