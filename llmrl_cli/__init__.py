"""llmrl: reinforcement learning with large-language-model priors (Yan et al., ICLR 2025)."""

import os

__version__ = "0.1.0"

# oneDNN (the CPU prior's packed linears, any bf16 matmul) keeps a primitive, and ideep its own
# entry, for every input shape it meets, up to 1,024 of each, so memory grows with every new
# row count (benchmarks/README.md). 32 of each is enough for a forward's layer shapes and keeps
# memory flat. Read once, at oneDNN's first use, so set here, before any tensor work; a user's own
# setting wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
os.environ.setdefault("LRU_CACHE_CAPACITY", "32")
