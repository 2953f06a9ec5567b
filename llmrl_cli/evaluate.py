"""``llmrl evaluate``: a finished run's final Q-function, evaluated with another prior, another
model or server, another k, prior mode or decoding (temperature, top_p), or other env options
(ALFWorld's unseen tasks) -- the paper's generalisation study (a Q trained with one prior and k,
tested on unseen tasks and with other LLMs and k; its test command uses Qwen1.5-32B, k 15,
T 0.8, top_p 0.95: readme.md:37, value-based/test_alfworld.py).

Only the evaluation changes: the Q-network (and its feature normaliser) comes from the run's
final checkpoint; episodes, seeds and the evaluation policy are the run's own (``episodes``
overrides their number). Each evaluation appends one row to ``seed_<n>.eval.csv`` beside the
run's CSV; an evaluation already in that file is not repeated.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .algos import algorithm
from .config import RunConfig
from .errors import UserError
from .training.store import read_checkpoint

EVAL_COLUMNS = [
    "env", "algo", "prior", "k", "prior_mode", "seed", "episode", "eval_prior", "eval_k",
    "eval_prior_mode", "eval_env_kwargs", "eval_episodes", "eval_return", "eval_success",
    "llm_calls", "llm_cache_hits", "wall_s",
    # added with the model and decoding options (older files are rewritten with them)
    "eval_prior_model", "eval_temperature", "eval_top_p",
]


@dataclass(frozen=True)
class EvalSpec:
    """What to change for the evaluation (None / empty: the run's own setting)."""

    prior: str | None = None
    k: int | None = None
    prior_mode: str | None = None
    prior_model: str | None = None
    prior_url: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    episodes: int | None = None

    def resolve(self, cfg: RunConfig) -> RunConfig:
        """The run's config with this evaluation's changes."""
        if self.episodes is not None and self.episodes < 1:
            raise UserError(f"--episodes must be >= 1, got {self.episodes}")
        agent = dataclasses.replace(cfg.agent, eval_episodes=self.episodes
                                    or cfg.agent.eval_episodes)
        prior = self.prior or cfg.prior
        changed = dataclasses.replace(
            cfg, prior=prior, k=cfg.k if self.k is None else self.k,
            prior_mode=self.prior_mode or cfg.prior_mode,
            prior_model=self.prior_model or cfg.prior_model,
            prior_url=self.prior_url or (cfg.prior_url if prior == cfg.prior else None),
            temperature=cfg.temperature if self.temperature is None else self.temperature,
            top_p=cfg.top_p if self.top_p is None else self.top_p,
            env_kwargs={**cfg.env_kwargs, **self.env_kwargs}, agent=agent)
        if self.prior and self.prior != cfg.prior:
            changed = dataclasses.replace(changed, prior_uniform_mix=0.0)
        from .envs import check_env_options
        from .priors import check_prior_name
        from .settings import check

        # each setting's own rules (not the run's pairing of algo and prior: an evaluation may
        # play a baseline's Q-function over an LLM's proposals)
        try:
            check(changed)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        check_prior_name(changed.prior)
        check_env_options(changed.env, changed.env_kwargs)
        if changed.prior_url is not None and changed.prior != "vllm":
            raise UserError(f"--prior-url is for --prior vllm (got --prior {changed.prior})")
        return changed


def eval_csv_path(cfg: RunConfig) -> Path:
    return cfg.stem.with_suffix(".eval.csv")


def _key(row: dict[str, Any]) -> tuple:
    return (str(row["eval_prior"]), int(row["eval_k"]), str(row["eval_prior_mode"]),
            str(row["eval_env_kwargs"]), int(row["eval_episodes"]),
            str(row.get("eval_prior_model") or ""), str(row.get("eval_temperature") or ""),
            str(row.get("eval_top_p") or ""))


def evaluate_run(cfg: RunConfig, spec: EvalSpec, log=print) -> dict[str, Any]:
    """Evaluate the finished run ``cfg`` as ``spec`` says; return (and record) the row."""
    from .runner import Runner

    ckpt = cfg.stem.parent / f"{cfg.stem.name}.ckpt.pt"
    if not ckpt.exists():
        raise UserError(f"{ckpt} does not exist: train the run first (`llmrl run`)")
    state = read_checkpoint(ckpt)
    if not state.get("finished"):
        raise UserError(f"{cfg.stem}.csv is not finished; run it to the end first")
    if algorithm(cfg.algo).family == "policy":
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
           "eval_episodes": eval_cfg.agent.eval_episodes,
           "eval_prior_model": eval_cfg.prior_model, "eval_temperature": eval_cfg.temperature,
           "eval_top_p": eval_cfg.top_p}
    path = eval_csv_path(cfg)
    rows: list[dict[str, Any]] = []
    if path.exists():
        with path.open() as f:
            rows = list(csv.DictReader(f))
        for old in rows:
            if "eval_prior_model" not in old:  # written before these columns: the run's own
                old.update(eval_prior_model=cfg.prior_model, eval_temperature=cfg.temperature,
                           eval_top_p=cfg.top_p)
            if _key(old) == _key(row):
                log(f"already evaluated: {path} ({eval_cfg.prior}, k={eval_cfg.k})")
                return {**old}
    started = time.perf_counter()
    runner = Runner(eval_cfg, log=log)
    runner.build()  # the Q-head of an offline (CQL) run has the same shape and state
    runner.agent.load_state_dict(state["agent"])
    runner.check_expert()
    ret, success = runner.evaluate(int(row["episode"]))
    stats = runner.prior.stats
    row.update(eval_return=ret, eval_success=success, llm_calls=stats.model_queries,
               llm_cache_hits=stats.cache_hits, wall_s=round(time.perf_counter() - started, 3))
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:  # the earlier rows (migrated) and this one
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows + [row])
    os.replace(tmp, path)
    return row
