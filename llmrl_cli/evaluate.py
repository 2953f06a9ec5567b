"""``llmrl evaluate``: a finished run's final Q-function, evaluated with another prior, another
k, another prior mode or other env options (ALFWorld's unseen tasks) -- the paper's
generalisation study (Sec. 5.3: a Q trained with one prior and k, tested on unseen tasks and
with other LLMs and k = 1, 5, 15).

Only the evaluation changes: the Q-network (and its feature normaliser) comes from the run's
final checkpoint; episodes, seeds and the evaluation policy are the run's own (``episodes``
overrides their number). Each evaluation appends one row to ``seed_<n>.eval.csv`` beside the
run's CSV; an evaluation already in that file is not repeated.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import UserError

EVAL_COLUMNS = [
    "env", "algo", "prior", "k", "prior_mode", "seed", "episode", "eval_prior", "eval_k",
    "eval_prior_mode", "eval_env_kwargs", "eval_episodes", "eval_return", "eval_success",
    "llm_calls", "llm_cache_hits", "wall_s",
]


@dataclass(frozen=True)
class EvalSpec:
    """What to change for the evaluation (None / empty: the run's own setting)."""

    prior: str | None = None
    k: int | None = None
    prior_mode: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    episodes: int | None = None

    def resolve(self, cfg: RunConfig) -> RunConfig:
        """The run's config with this evaluation's changes."""
        if self.k is not None and self.k < 1:
            raise UserError(f"--k must be >= 1, got {self.k}")
        if self.episodes is not None and self.episodes < 1:
            raise UserError(f"--episodes must be >= 1, got {self.episodes}")
        agent = dataclasses.replace(cfg.agent, eval_episodes=self.episodes
                                    or cfg.agent.eval_episodes)
        changed = dataclasses.replace(
            cfg, prior=self.prior or cfg.prior, k=self.k or cfg.k,
            prior_mode=self.prior_mode or cfg.prior_mode,
            env_kwargs={**cfg.env_kwargs, **self.env_kwargs}, agent=agent)
        if self.prior and self.prior != cfg.prior:
            changed = dataclasses.replace(changed, prior_uniform_mix=0.0)
        return changed


def eval_csv_path(cfg: RunConfig) -> Path:
    return cfg.stem.with_suffix(".eval.csv")


def _key(row: dict[str, Any]) -> tuple:
    return (str(row["eval_prior"]), int(row["eval_k"]), str(row["eval_prior_mode"]),
            str(row["eval_env_kwargs"]), int(row["eval_episodes"]))


def evaluate_run(cfg: RunConfig, spec: EvalSpec, log=print) -> dict[str, Any]:
    """Evaluate the finished run ``cfg`` as ``spec`` says; return (and record) the row."""
    from .runner import Runner

    ckpt = cfg.stem.parent / f"{cfg.stem.name}.ckpt.pt"
    if not ckpt.exists():
        raise UserError(f"{ckpt} does not exist: train the run first (`llmrl run`)")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    if not state.get("finished"):
        raise UserError(f"{cfg.stem}.csv is not finished; run it to the end first")
    if cfg.algo in ("gflan", "gflan-prior"):
        raise UserError(f"llmrl evaluate re-scores a Q-function; {cfg.algo} runs have none (their "
                        "CSV already holds the policy's evaluations)")
    eval_cfg = spec.resolve(cfg)
    row = {"env": cfg.env, "algo": cfg.algo, "prior": cfg.prior, "k": cfg.k,
           "prior_mode": cfg.prior_mode, "seed": cfg.seed,
           # episodes (online) or gradient steps (offline) the Q-function was trained for
           "episode": int(state.get("episodes_done", state.get("grad_steps", 0))),
           "eval_prior": eval_cfg.prior, "eval_k": eval_cfg.k,
           "eval_prior_mode": eval_cfg.prior_mode,
           "eval_env_kwargs": json.dumps(eval_cfg.env_kwargs, sort_keys=True),
           "eval_episodes": eval_cfg.agent.eval_episodes}
    path = eval_csv_path(cfg)
    if path.exists():
        with path.open() as f:
            for old in csv.DictReader(f):
                if _key(old) == _key(row):
                    log(f"already evaluated: {path} ({eval_cfg.prior}, k={eval_cfg.k})")
                    return {**old}
    started = time.perf_counter()
    runner = Runner(eval_cfg, log=log)
    runner._build()  # the Q-head of an offline (CQL) run has the same shape and state
    runner.agent.load_state_dict(state["agent"])
    runner.check_expert()
    ret, success = runner.evaluate(int(row["episode"]))
    stats = runner.prior.stats
    row.update(eval_return=ret, eval_success=success, llm_calls=stats.model_queries,
               llm_cache_hits=stats.cache_hits, wall_s=round(time.perf_counter() - started, 3))
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    return row
