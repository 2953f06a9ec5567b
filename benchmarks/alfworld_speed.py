"""ALFWorld Pick & Place on the real engine: game load time and env steps per second.

Not a test: ``.venv/bin/python benchmarks/alfworld_speed.py [--data DIR] [--games N] [--steps N]``.
Games: ``--data`` (official layout), else ``$ALFWORLD_DATA``, else llmrl's generated set.
Reports: the time to make the env (AlfredTWEnv's game search, cached per process), the time of a
``reset`` (the engine loads the game file: PDDL translation, grammar), and steps per second
under a uniformly random policy and under the engine's handcoded expert (every step also
computes the expert's next action, as the env always does) -- each twice, side by side: with
TextWorld's own parser (``fast_text=False``, the paper's code path) and with llmrl's exact
parse cache (the default), and their ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from llmrl_cli.envs import make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--split", default="train")
    parser.add_argument("--games", type=int, default=10, help="resets to time")
    parser.add_argument("--steps", type=int, default=200, help="steps per policy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rates = {}
    for fast in (False, True):
        name = "parse cache" if fast else "TextWorld parser"
        print(f"-- {name} (fast_text={fast})")
        rates[fast] = measure(args, fast)
    for policy in ("random", "expert"):
        print(f"speed-up of the parse cache, {policy} policy: "
              f"{rates[True][policy] / rates[False][policy]:.1f}x")


def measure(args, fast: bool) -> dict[str, float]:
    start = time.perf_counter()
    env = make("alfworld-pick", split=args.split, data=args.data, fast_text=fast)
    made = time.perf_counter() - start
    print(f"make env: {made:.2f} s ({len(env.games)} games in split {args.split})")

    loads = []
    for i in range(args.games):
        start = time.perf_counter()
        env.reset(seed=args.seed + i)
        loads.append(time.perf_counter() - start)
    print(f"reset (load a game): median {statistics.median(loads):.2f} s, "
          f"min {min(loads):.2f}, max {max(loads):.2f} over {len(loads)} games")

    rng = random.Random(args.seed)
    rates = {}
    for policy in ("random", "expert"):
        obs, _ = env.reset(seed=args.seed)
        steps, elapsed, episodes = 0, 0.0, 0
        while steps < args.steps:
            action = (rng.randrange(len(obs["actions"])) if policy == "random"
                      else env.optimal_actions()[0])
            start = time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(action)
            elapsed += time.perf_counter() - start
            steps += 1
            if terminated or truncated:
                episodes += 1
                obs, _ = env.reset(seed=args.seed + steps)  # load time not counted here
        rates[policy] = steps / elapsed
        print(f"{policy:6s} policy: {rates[policy]:6.1f} steps/s ({steps} steps, "
              f"{episodes} episodes ended; resets excluded)")
    return rates

if __name__ == "__main__":
    main()
