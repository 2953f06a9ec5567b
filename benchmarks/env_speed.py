"""Macro-steps per second of each Overcooked env alone, under a uniformly random policy.

Not a test: ``.venv/bin/python benchmarks/env_speed.py [--steps N] [--seed S]``.
Counts full env steps (simulation, text and labels); resets are included in the time.
"""

from __future__ import annotations

import argparse
import random
import time

from llmrl_cli.envs import make


def macro_steps_per_second(name: str, steps: int, seed: int) -> float:
    env = make(name)
    rng = random.Random(seed)
    obs, _ = env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(rng.randrange(len(obs["actions"])))
        if terminated or truncated:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("overcooked-tomato", "overcooked-salad"):
        rate = macro_steps_per_second(name, args.steps, args.seed)
        print(f"{name:18s} {rate:10,.0f} macro-steps/s (random policy, {args.steps} steps)")


if __name__ == "__main__":
    main()
