"""(state, action) pairs per second through the Q-network's frozen text encoder, cold and warm.

Not a test: ``.venv/bin/python benchmarks/encoder_speed.py [--device cpu|cuda] [--pairs N]
[--call N] [--baseline REV] [--env NAME] [--json FILE]``. The texts are Q inputs of the
states random play meets (default BabyAI GoTo: about 75 words each), all distinct (Overcooked
Tomato, the first choice, has only 105 distinct ones). ``cold``: a fresh encoder encodes them
in calls of ``--call`` texts (the encoder model runs on every text); ``warm``: the same calls
again (every text from the cache). Each configuration runs in a fresh encoder; ``--baseline
REV`` also times ``llmrl_cli/encoders.py`` as it was at git revision REV, in this process, for
ratios measured side by side. Results: benchmarks/README.md, "Encoder throughput".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmrl_cli.encoders import TextEncoder
from llmrl_cli.envs import make


def q_texts(count: int, env_name: str = "babyai-goto", seed: int = 0) -> list[str]:
    """``count`` distinct Q-input texts of ``env_name``'s states under random play."""
    env = make(env_name)
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    episode = steps_without_news = 0
    obs, _ = env.reset(seed=seed)
    while len(texts) < count:
        if steps_without_news > 10_000:
            raise SystemExit(f"{env_name} has only {len(texts)} distinct Q inputs; ask for "
                             f"fewer --pairs or another --env")
        known = len(texts)
        for action in obs["actions"]:
            texts[env.q_input(obs["text"], action, env.feature_task)] = None
        steps_without_news = 0 if len(texts) > known else steps_without_news + 1
        obs, _, terminated, truncated, _ = env.step(rng.randrange(len(obs["actions"])))
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return list(texts)[:count]


def baseline_encoder_class(rev: str):
    """``TextEncoder`` as ``llmrl_cli/encoders.py`` defined it at git revision ``rev``."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:llmrl_cli/encoders.py"], cwd=root,
                            check=True, capture_output=True, text=True).stdout
    source = source.replace("from .errors import", "from llmrl_cli.errors import")
    path = Path(tempfile.mkdtemp()) / "encoders_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("encoders_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.TextEncoder


def pairs_per_second(encoder, texts: list[str], call: int) -> float:
    sync = torch.cuda.synchronize if encoder.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(0, len(texts), call):
        encoder.encode(texts[i : i + call])
    sync()
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--call", type=int, default=512, help="texts per encode call")
    parser.add_argument("--baseline", help="also time encoders.py at this git revision")
    parser.add_argument("--env", default="babyai-goto", help="whose states give the texts")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    texts = q_texts(args.pairs, args.env)
    words = sum(len(t.split()) for t in texts) / len(texts)
    configs = [("llmrl", TextEncoder, {})]
    if args.device.startswith("cuda"):
        configs.append(("llmrl, no length buckets", TextEncoder, {"bucket_by_length": False}))
    else:
        configs.append(("llmrl, length buckets", TextEncoder, {"bucket_by_length": True}))
    if args.baseline:
        configs.insert(0, (f"baseline {args.baseline}", baseline_encoder_class(args.baseline),
                           {}))
    results = []
    print(f"{len(texts)} distinct texts of {args.env}, {words:.0f} words each on average, calls "
          f"of {args.call}, device {args.device}", flush=True)
    print(f"{'encoder':32s} {'cold pairs/s':>13s} {'warm pairs/s':>13s}")
    for name, cls, kwargs in configs:
        encoder = cls(device=args.device, **kwargs)
        encoder.encode(texts[:8])  # load kernels; these 8 count as cached below
        cold = pairs_per_second(encoder, texts, args.call)
        warm = pairs_per_second(encoder, texts, args.call)
        results.append({"encoder": name, "device": args.device, "env": args.env,
                        "pairs": len(texts),
                        "call": args.call, "cold_pairs_per_s": round(cold, 1),
                        "warm_pairs_per_s": round(warm, 1), "mean_words": round(words, 1),
                        "torch": torch.__version__})
        print(f"{name:32s} {cold:13,.0f} {warm:13,.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
