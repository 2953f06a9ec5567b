"""``llmrl sweep FILE``: every run of an experiment grid, in a pool of worker processes.

An experiment YAML holds run settings (as for ``llmrl run --config``) plus a ``sweep:``
mapping of setting -> list of values; the runs are the product of those lists. ``prior``
values apply to the ``-prior`` algos only (the baselines run once, with every admissible
action). Each run's results go to ``<out>/<experiment>[-<suffix>]/<env>/<algo>/seed_<n>.csv``,
the suffix naming the swept values that are not already part of that path (e.g.
``offline-salad-n400``). Finished runs are skipped and killed ones resume (the runners do
that), all runs share the persistent proposal cache, and a failed run is reported without
stopping the others.

A file may define ``profiles:`` (e.g. ``quick``: small budgets for a smoke run of the whole
pipeline); ``--profile NAME`` applies one (see ``apply_profile``), the default ``paper`` none.

Executors: ``local`` runs ``workers`` runs at a time in a process pool on this machine;
``ray`` submits every run as a Ray task (one CPU each, or ``threads`` CPUs) to
``ray.init(address=...)``. With no address Ray starts a local cluster; with one (``auto`` or
``ray://host:10001``) the workers must have llmrl installed and see the results folder and
``$LLMRL_CACHE_DIR`` at the same paths (a shared filesystem), which the driver forwards.
"""

from __future__ import annotations

import itertools
import os
import signal
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .algos import algorithm, make_loop
from .config import RunConfig, build_config, load_yaml
from .errors import UserError

EXECUTORS = ("local", "ray")
#: settings already in a run's path, so they need no experiment-name suffix
IN_PATH = ("env", "algo", "seed")
SHORT = {"max_transitions": "n", "k": "k", "prior": "", "prior_mode": "", "episodes": "ep"}


@dataclass
class SweepResult:
    name: str
    path: str | None
    error: str | None


#: the profile every experiment file has: its own settings, unchanged
PAPER = "paper"


def apply_profile(data: dict[str, Any], name: str, path: Path | str = "") -> dict[str, Any]:
    """The experiment settings under profile ``name``: ``profiles[name]`` overrides top-level
    settings; its ``sweep``, ``agent`` and ``env_kwargs`` mappings override key by key."""
    data = dict(data)
    profiles = data.pop("profiles", None) or {}
    if name == PAPER:
        return data
    if not isinstance(profiles, dict) or name not in profiles:
        raise UserError(f"{path}: unknown profile {name!r}; choose one of "
                        f"{', '.join([PAPER, *profiles])}")
    for key, value in (profiles[name] or {}).items():
        if key in ("sweep", "evaluate", "agent", "env_kwargs") and isinstance(value, dict):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    return data


def expand(path: Path | str, profile: str = PAPER, **overrides: Any) -> list[RunConfig]:
    """The runs of an experiment file (settings validated, duplicates removed)."""
    data = apply_profile(load_yaml(path), profile, path)
    data.pop("evaluate", None)
    grid = data.pop("sweep", None) or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise UserError(f"{path}: 'sweep' must map settings to lists of values")
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise UserError(f"{path}: the sweep's list of {', '.join(empty)} is empty, so it has no "
                        "runs")
    base_name = data.get("experiment", Path(path).stem)
    keys = list(grid)
    runs: dict[tuple, RunConfig] = {}
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        spec = algorithm(point.get("algo", data.get("algo", RunConfig.algo)))
        if not spec.takes_prior:
            point.pop("prior", None)
            point.pop("prior_mode", None)
        if not spec.offline:
            point.pop("dataset", None)
            point.pop("max_transitions", None)
        suffix = "-".join(f"{SHORT.get(k, k)}{_label(v)}" for k, v in point.items()
                          if k not in IN_PATH and v is not None)
        experiment = f"{base_name}-{suffix}" if suffix else base_name
        settings = {**data, **point, "experiment": experiment}
        if not spec.takes_prior:
            settings.pop("prior", None)
        if not spec.offline:
            settings.pop("dataset", None)
            settings.pop("max_transitions", None)
        cfg = build_config(settings, **overrides)
        runs.setdefault((cfg.experiment, cfg.env, cfg.algo, cfg.seed), cfg)
    return list(runs.values())


#: what an ``evaluate:`` grid may vary (see llmrl_cli/evaluate.py)
EVAL_KEYS = ("prior", "k", "prior_mode", "env_kwargs", "episodes")


def eval_specs(path: Path | str, profile: str = PAPER) -> list:
    """The evaluations of the file's ``evaluate:`` grid, run on each finished run's final Q
    (the product of its lists; e.g. prior x k x env_kwargs for the generalisation study)."""
    from .evaluate import EvalSpec

    grid = apply_profile(load_yaml(path), profile, path).get("evaluate") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise UserError(f"{path}: 'evaluate' must map settings to lists of values")
    unknown = set(grid) - set(EVAL_KEYS)
    if unknown:
        raise UserError(f"{path}: 'evaluate' cannot vary {', '.join(sorted(unknown))}; it "
                        f"may vary {', '.join(EVAL_KEYS)}")
    keys = list(grid)
    return [EvalSpec(**{k: (v or {}) if k == "env_kwargs" else v
                        for k, v in zip(keys, values)})
            for values in itertools.product(*(grid[k] for k in keys))] if keys else []


def _label(value: Any) -> str:
    return str(value).replace(":", "").replace("/", "_")


def run_one(cfg: RunConfig, threads: int | None = None, evals: list | None = None
            ) -> SweepResult:
    """One run in this process (the pool's task), on ``threads`` CPU threads, then its
    evaluations (``evals``: EvalSpecs)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    name = f"{cfg.experiment}/{cfg.env}/{cfg.algo}/seed_{cfg.seed}"
    try:
        path = make_loop(cfg, log=lambda *_: None).run()
        if evals:
            from .evaluate import evaluate_run

            for spec in evals:
                evaluate_run(cfg, spec, log=lambda *_: None)
        return SweepResult(name, str(path), None)
    except UserError as exc:
        return SweepResult(name, None, str(exc))
    except Exception:  # a crashed run must not take the sweep down
        return SweepResult(name, None, traceback.format_exc(limit=3).strip().splitlines()[-1])


def sweep(runs: list[RunConfig], workers: int = 1, on_done=None, executor: str = "local",
          address: str | None = None, evals: list | None = None) -> list[SweepResult]:
    """Run ``runs``; ``on_done(result)`` is called as each one ends (in completion order)."""
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    if executor == "ray":
        return _sweep_ray(runs, threads if workers > 1 else 1, on_done, address, evals)
    results = []

    def finish(result: SweepResult) -> None:
        results.append(result)
        if on_done:
            on_done(result)

    if workers <= 1:
        for cfg in runs:
            finish(run_one(cfg, None, evals))
        return results
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_leave_ctrl_c_to_the_driver)
    try:
        for future in as_completed([pool.submit(run_one, cfg, threads, evals) for cfg in runs]):
            finish(future.result())
    except KeyboardInterrupt:  # Ctrl-C: no run starts after it, and the running ones stop now
        stop_pool(pool)
        raise
    pool.shutdown()
    return results


def _leave_ctrl_c_to_the_driver() -> None:
    """A worker ignores Ctrl-C: the driver decides (``stop_pool``), so a worker never moves on
    to a queued run after it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the runs not started and end the running ones (a kill: they resume from their
    last checkpoint, which is written atomically)."""
    # the executor keeps its worker processes in a private mapping, emptied by shutdown
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()

def run_in(cwd: str, cfg: RunConfig, threads: int | None = None, evals: list | None = None
           ) -> SweepResult:
    """``run_one`` from the driver's working directory (relative paths mean the same there)."""
    os.chdir(cwd)
    return run_one(cfg, threads, evals)


def _sweep_ray(runs: list[RunConfig], threads: int, on_done, address: str | None,
               evals: list | None = None) -> list[SweepResult]:
    """Each run a Ray task needing ``threads`` CPUs; results gathered as they finish."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'ray>=2.40'") from None
    forwarded = {k: os.environ[k] for k in ("LLMRL_CACHE_DIR", "OMP_NUM_THREADS") if k in os.environ}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": forwarded} if forwarded else None)
    try:
        task = ray.remote(num_cpus=threads, max_retries=0)(run_in)
        cwd = os.getcwd()  # results must land where the driver looks for them
        pending = {task.remote(cwd, cfg, threads, evals): cfg for cfg in runs}
        results = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cfg = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the worker process died (killed, out of memory)
                    name = f"{cfg.experiment}/{cfg.env}/{cfg.algo}/seed_{cfg.seed}"
                    result = SweepResult(name, None, f"Ray task failed: {type(exc).__name__}")
                results.append(result)
                if on_done:
                    on_done(result)
        return results
    finally:
        if started_here:
            ray.shutdown()
