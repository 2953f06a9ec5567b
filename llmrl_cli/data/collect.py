"""Collect an offline dataset by running a behaviour policy in an env.

Policies: ``random`` (uniform over admissible actions) and ``expert-mix:EPS`` (the env's
expert with probability 1-EPS, else uniform; needs an env with an expert). ``success_share``
balances the dataset like the paper's (100 of 133 Salad episodes successful, 75%): episodes
are collected until ``round(share * n)`` successful and the rest failed ones are in hand,
extra episodes of the full kind being dropped. Everything is a function of the seed.
"""

from __future__ import annotations

import random

from ..envs import make
from ..errors import UserError
from ..priors import parse_expert_mix
from ..seeding import stable_seed
from .dataset import Dataset, Transition

POLICIES = ("random", "expert-mix:EPS")
#: the paper's offline Salad dataset: 133 episodes, 100 of them successful
PAPER_EPISODES, PAPER_SUCCESS_SHARE = 133, 100 / 133


def _policy_eps(policy: str) -> float:
    if policy == "random":
        return 1.0
    eps = parse_expert_mix(policy)
    if eps is None:
        raise UserError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    return eps


def collect(env_name: str, policy: str, episodes: int, seed: int,
            success_share: float | None = None, max_tries: int = 50,
            **env_kwargs) -> Dataset:
    """``episodes`` episodes of ``policy`` (see the module docstring)."""
    eps = _policy_eps(policy)
    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    if success_share is not None and not 0.0 <= success_share <= 1.0:
        raise UserError(f"--success-share must be in [0, 1], got {success_share}")
    env = make(env_name, **env_kwargs)
    rng = random.Random(stable_seed("collect", seed, policy))
    want_success = None if success_share is None else round(success_share * episodes)
    kept: list[list[Transition]] = []
    n_success = n_failed = 0
    for attempt in range(max_tries * episodes):
        if len(kept) == episodes:
            break
        steps, success = _episode(env, eps, rng, stable_seed("collect-episode", seed, attempt))
        if want_success is not None:
            if success and n_success >= want_success:
                continue
            if not success and n_failed >= episodes - want_success:
                continue
        n_success += success
        n_failed += not success
        kept.append(steps)
    else:
        raise UserError(f"could not collect {episodes} episodes with {success_share:.0%} "
                        f"successful from {policy} on {env_name} in {max_tries * episodes} tries")
    if len(kept) < episodes:
        raise UserError(f"collected only {len(kept)} of {episodes} episodes")
    transitions = [Transition(**{**vars(tr), "episode": i}) for i, steps in enumerate(kept)
                   for tr in steps]
    return Dataset(env_name, env.instruction, transitions)


def _episode(env, eps: float, rng: random.Random, reset_seed: int):
    obs, _ = env.reset(seed=reset_seed % 2**31)
    steps: list[Transition] = []
    success = False
    for t in range(10_000):
        if rng.random() < eps:
            action = rng.choice(obs["actions"])
        else:
            action = env.expert_action()
        nxt, reward, terminated, truncated, info = env.step(action)
        steps.append(Transition(0, t, obs["text"], tuple(obs["actions"]), action, float(reward),
                                nxt["text"], tuple(nxt["actions"]), bool(terminated)))
        obs = nxt
        if terminated or truncated:
            success = bool(info.get("success"))
            break
    return steps, success
