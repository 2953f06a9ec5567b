"""Peak RSS of an alfworld-pick ``dqn-prior`` run in its steady state: every bounded store full.

Not a test: ``.venv/bin/python benchmarks/alfworld_memory.py [--episodes 16] [--json FILE]``.

A 1,000-episode run (the paper's ALFWorld budget) with the embedded prior takes days of this
CPU. What such a run can grow into is bounded by its settings, and by episode 1,000 each of
these stores has long been full:

- the replay buffer: ``agent.buffer_size`` transitions (20,000; about 50,000 are played),
  each holding its features and the features of the next state's k candidates;
- the encoder's embedding cache: ``encoder_cache_size`` vectors (200,000, LRU);
- the CPU prior's prefix KV cache: ``prefix_cache_mb`` (512 MB);
- the proposal cache's in-memory front: 100,000 answers (the rest stay on disk);
- one decode batch's keys/values: ``prior_batch_kv_mb`` (1,024 MB), freed after each call.

This script starts a real run -- generated games on the real engine, the embedded SmolLM2-135M
prior and MiniLM encoder, the env preset's settings -- and first fills each store to its bound
with entries of the real shapes (random values, distinct keys, ALFWorld-sized texts). Then it
plays ``--episodes`` training episodes on 8 envs, trains from the first of them (so Q updates
sweep the full buffer), evaluates ``--eval-episodes`` (10) at once, and prints the peak
resident set size (VmHWM) and the size of each store. It shows the steady state of a long
run, not its history: memory that grows with episodes outside these stores would not show.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llmrl_cli.bench import peak_rss_mb, rss_mb
from llmrl_cli.config import build_config
from llmrl_cli.priors.cache import ProposalCache
from llmrl_cli.runner import Runner


class AgedRunner(Runner):
    """A Runner whose bounded stores are full before its first episode."""

    text_chars = 600  # an ALFWorld Q-input text: task, action, observation
    proposal_items = 100_000

    def _build(self) -> None:
        super()._build()
        self.sizes = {"rss_after_build_mb": rss_mb()}
        gen = torch.Generator().manual_seed(0)
        cfg, dim, k = self.cfg, self.encoder.dim, self.cfg.k

        replay = self.replay
        replay._grow(k)
        replay.features.normal_(generator=gen)
        replay.next_features.normal_(generator=gen)
        replay.next_mask[:] = True
        replay.size, replay.cursor = replay.capacity, 0
        self.sizes["replay_mb"] = sum(t.numel() * t.element_size() for t in (
            replay.features, replay.next_features, replay.next_mask)) / 2**20

        filler = "x" * self.text_chars
        for i in range(cfg.encoder_cache_size):
            self.encoder._cache[f"{i:09d} {filler}"] = torch.randn(dim, generator=gen)
        self.sizes["encoder_cache_entries"] = len(self.encoder._cache)

        prior = self.prior
        # a fresh proposal cache: answers cached by earlier runs would spare the model its work
        prior.cache = ProposalCache(Path(cfg.out) / "proposals.sqlite")
        engine = prior.engine
        engine.load()
        if engine._prefix is not None:
            config = engine.lm.config
            heads = config.num_key_value_heads
            head_dim = getattr(config, "head_dim", None) or (
                config.hidden_size // config.num_attention_heads)
            length = 375  # an ALFWorld prompt's tokens
            shape = (config.num_hidden_layers, heads, length, head_dim)
            prompt_bytes = 2 * torch.empty(shape, dtype=engine.lm.dtype).nbytes
            # one more prompt would evict: the cache is as full as its budget lets it get
            while engine._prefix.nbytes + prompt_bytes <= engine._prefix.max_bytes:
                ids = [1, 2, 3, *torch.randint(100, 40_000, (length - 3,), generator=gen).tolist()]
                keys = torch.randn(shape, generator=gen).to(engine.lm.dtype)
                engine._prefix.insert(ids, keys, torch.randn(shape, generator=gen).to(keys.dtype))
            self.sizes["prefix_cache_mb"] = engine._prefix.nbytes / 2**20
        answers = {f"{i:064x}": [f"go to countertop {i % 9}"] * k
                   for i in range(self.proposal_items)}
        prior.cache._remember(answers)
        self.sizes["proposal_front_entries"] = len(prior.cache._memory)
        self.sizes["rss_after_fill_mb"] = rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = build_config(
            env="alfworld-pick", algo="dqn-prior", prior="local", episodes=args.episodes,
            num_envs=args.num_envs, seed=args.seed, out=out, experiment="memory",
            agent={"train_start": 0, "train_every": args.num_envs,
                   "eval_every": args.episodes, "eval_episodes": args.eval_episodes},
        )
        runner = AgedRunner(cfg, log=lambda msg: None)
        started = time.perf_counter()
        runner.run()
        result = {
            "episodes": args.episodes, "num_envs": args.num_envs,
            "wall_s": round(time.perf_counter() - started, 1),
            "env_steps": runner.env_steps, "grad_steps": runner.agent.grad_steps,
            **{k: round(v, 1) if isinstance(v, float) else v for k, v in runner.sizes.items()},
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    for key, value in result.items():
        print(f"{key:>24}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
