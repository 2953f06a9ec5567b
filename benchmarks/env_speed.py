"""Env steps per second of every registered env alone, under a random policy and the expert.

Not a test: ``.venv/bin/python benchmarks/env_speed.py [--env NAME ...] [--steps N] [--seed S]
[--json FILE]``. Counts full env steps (engine, text, admissible actions); resets, and the
expert's planning under the expert policy, are included in the time. Results and where the time
goes in the slow envs: benchmarks/README.md, "Environment speed".
"""

from __future__ import annotations

import argparse
import json
import random
import time

from llmrl_cli.envs import REGISTRY, make


def steps_per_second(name: str, policy: str, steps: int, seed: int) -> tuple[float, int]:
    """(steps per second, episodes started) over ``steps`` steps of ``policy``."""
    env = make(name)
    rng = random.Random(seed)
    episode = 0
    obs, _ = env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        if policy == "expert":
            action = env.expert_action()
        else:
            action = rng.randrange(len(obs["actions"]))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate, episode + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="*", default=list(REGISTRY), help="default: every env")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = []
    print(f"{'env':20s} {'policy':7s} {'steps/s':>10s} {'episodes':>9s}")
    for name in args.env:
        cls = REGISTRY[name][0]
        for policy in ("random", "expert") if cls.has_expert() else ("random",):
            rate, episodes = steps_per_second(name, policy, args.steps, args.seed)
            results.append({"env": name, "policy": policy, "steps": args.steps,
                            "steps_per_second": round(rate, 1), "episodes": episodes})
            print(f"{name:20s} {policy:7s} {rate:10,.1f} {episodes:9d}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
