"""Env time per batch step with the envs in worker processes (``num_env_workers``) or not.

Not a test: ``.venv/bin/python benchmarks/env_workers_speed.py [--env NAME] [--num-envs N]
[--workers 0,1,2] [--steps S] [--json FILE]``. ``num_envs`` envs play uniformly random
admissible actions, stepping together as the training loop steps them (``step_envs``: in worker
processes, every request is sent before any reply is read); a finished episode resets at once.
Reported: seconds of env time per batch step (steps and resets), for each worker count, on the
same seeds and actions. Results: benchmarks/README.md, "Env workers".
"""

from __future__ import annotations

import argparse
import json
import random
import time

from llmrl_cli.envs import make
from llmrl_cli.training.env_workers import EnvWorkers, step_envs


def seconds_per_batch_step(name: str, num_envs: int, workers: int, steps: int) -> float:
    pool = EnvWorkers(name, {}, workers) if workers else None
    envs = [pool.make() if pool else make(name) for _ in range(num_envs)]
    rng = random.Random(0)
    resets = [num_envs * 1000 + i for i in range(num_envs)]
    try:
        obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]  # loads: not timed
        start = time.perf_counter()
        for _ in range(steps):
            actions = [o["actions"][rng.randrange(len(o["actions"]))] for o in obs]
            results = step_envs(envs, actions)
            for i, (o, _, terminated, truncated, _) in enumerate(results):
                obs[i] = o
                if terminated or truncated:
                    resets[i] += 1
                    obs[i] = envs[i].reset(seed=resets[i])[0]
        return (time.perf_counter() - start) / steps
    finally:
        if pool:
            pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="alfworld-pick")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--workers", default="0,1,2", help="worker counts, comma-separated")
    parser.add_argument("--steps", type=int, default=100, help="batch steps per count")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = []
    print(f"{args.env}, {args.num_envs} envs, {args.steps} batch steps of random actions")
    print(f"{'workers':>8s} {'s / batch step':>15s}")
    for workers in [int(w) for w in args.workers.split(",")]:
        seconds = seconds_per_batch_step(args.env, args.num_envs, workers, args.steps)
        results.append({"env": args.env, "num_envs": args.num_envs, "workers": workers,
                        "steps": args.steps, "seconds_per_batch_step": round(seconds, 4)})
        print(f"{workers:8d} {seconds:15.4f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
