"""The local inference engine: a causal LM run in-process with transformers, behind three calls
that the ``local`` prior and the GFlan policy share: ``load``, ``sample`` (k completions per
prompt) and ``score`` (summed log-probs of candidate texts after each prompt). GFlan's training
forward uses the plain model (``load_trainable``, ``lm``, ``tokenize``, ``select_cache``).

Both calls batch all prompts of a step through the model together, and prefill each prompt
once. On CPU each prompt is prefilled after the longest token prefix any
earlier prompt shared has been taken from the prefix KV cache (``prefix_cache.py``,
``prefix_cache_mb``; 0 turns it off) -- prefill is compute-bound there, so a padded batch
would only add the padding's work: with the CPU kernels the prompts' new tokens run as one
flattened forward (below), otherwise one prompt at a time. Each prompt's keys/values go,
left-padded, straight into the batch's decode buffers. On CUDA the prompts prefill together
in one padded batch.

- ``sample``: the k samples of every prompt decode together (at most ``max_new_tokens``,
  stopping at the end-of-text token, or also at a newline under ``stop_on_newline``) as a tree
  on the prompt's one row of keys/values: one query per
  distinct unfinished prefix (samples that drew the same tokens so far share it), each seeing
  the prompt and its own ancestors through a 4-D attention mask; a prompt whose samples have
  all stopped leaves the batch. The prompt's keys/values are not copied per sample, and new
  ones are written in place (``reserved_cache.py``) rather than concatenated. Token draws use
  a per-(prompt, draw index) random stream, so a state's proposals are a pure function of the
  cache key and do not depend on batch order.
- ``score``: the prompt's KV cache is expanded to its candidate actions, and only the candidate
  tokens run through the model (a forward of prompt + candidate for every candidate would
  repeat each prompt's work once per candidate).

Weights run in bf16 on CUDA and fp32 on CPU (``dtype``; see ``devices.resolve_dtype`` for why
bf16 is opt-in on CPUs). In fp32 on CPU the linear layers run on oneDNN-packed weights and
masked attention folds each key/value head's query heads into one block instead of copying
keys/values to every head (``cpu_kernels.py``; ``cpu_kernels``). With those kernels the
forwards also run *flattened* (``reserved_cache.RaggedRows``): the rows of all prompts -- the
uncached prompt tokens in a prefill, the live tree nodes in a decode step -- form one unpadded
sequence, so the linear layers compute no padding rows; only attention pads, per prompt. The
prompts then prefill together, in waves: a prompt that shares a long prefix with another of
the call waits for the next wave and reuses that prompt's keys/values from the prefix cache.

Versions (pyproject.toml): transformers >= 5.0 and < 5.40, whose model forwards and cache
classes this module and ``cpu_kernels.py`` drive. Before 5.24 a model's forward does not hand
the flattened rows on to the cache update; ``load`` tries one flattened forward and, where it
fails, runs the forwards unflattened (same numbers) with a one-line notice. torch >= 2.4
(``make install`` pins 2.13.0 on CPU); the oneDNN-packed layers need a torch built with mkldnn
(``cpu_kernels.py`` falls back to plain layers otherwise).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from ..devices import resolve_dtype
from ..seeding import stable_seed
from .cpu_kernels import flat_forward, runs_flat_forward, speed_up_cpu_model
from .models import EMBEDDED_MODEL, load_causal_lm
from .prefix_cache import PrefixKVCache, common_length

__all__ = ["LocalEngine", "select_cache"]


@dataclass
class LocalEngine:
    """One causal LM in-process; ``load``, ``sample``, ``score`` (module docstring)."""

    #: the embedded model's name, a Hugging Face folder or a .gguf file (``models.py``)
    model: str = EMBEDDED_MODEL
    device: str = "cpu"
    #: "auto" (bf16 on CUDA, fp32 on CPU), "bfloat16" or "float32"
    dtype: str = "auto"
    #: prompts per forward
    batch_size: int = 16
    #: sampling temperature (0: greedy) and nucleus mass
    temperature: float = 1.0
    top_p: float = 1.0
    #: tokens per completion at most
    max_new_tokens: int = 10
    #: also stop a completion at a token holding a newline (else only at end-of-text)
    stop_on_newline: bool = False
    #: wrap each prompt in the tokenizer's chat template
    chat_template: bool = False
    #: seeds every completion's random stream (with its prompt and draw index)
    seed: int = 0
    #: score at most this many (candidate row x token x vocabulary) logits at once
    max_score_logits: int = 2**26
    #: CPU: megabytes of prompt keys/values kept for later prompts with the same token prefix
    prefix_cache_mb: int = 512
    #: megabytes of keys/values one decode batch may hold: each prompt's once, plus room for its
    #: k answers (score mode: the prompt's are copied to each candidate)
    max_batch_kv_mb: int = 1024
    #: fp32 on CPU: oneDNN-packed linear layers, grouped-query attention under masks and
    #: flattened forwards (``cpu_kernels.py``; the same numbers up to float rounding); False
    #: runs plain transformers
    cpu_kernels: bool = True
    #: counters the engine adds to (``tokens``, ``prompt_tokens``, ``reused_tokens``): the
    #: prior's ``PriorStats``
    stats: Any = None
    _prefix: PrefixKVCache | None = field(default=None, repr=False)
    _tokenizer: object = field(default=None, repr=False)
    _lm: object = field(default=None, repr=False)
    #: tokens that end a sample: end-of-text, and under ``stop_on_newline`` any with a newline
    _stop_ids: torch.Tensor | None = field(default=None, repr=False)
    #: the CPU kernels are in: forwards may run flattened, unpadded (``RaggedRows``)
    _ragged: bool = field(default=False, repr=False)
    #: ...and ``cpu_kernels.flat_forward`` runs them (a Llama-layout model)
    _flat: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.stats is None:
            from ..priors.base import PriorStats

            self.stats = PriorStats()

    def load(self) -> None:
        """Load the model and tokenizer (once)."""
        if self._lm is not None:
            return
        device = torch.device(self.device)
        self._tokenizer, self._lm = load_causal_lm(
            self.model, device, resolve_dtype(self.dtype, device)
        )
        if self.cpu_kernels:
            self._ragged = speed_up_cpu_model(self._lm)
            self._flat = self._ragged and runs_flat_forward(self._lm)
        tok = self._tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        stop = [tok.eos_token_id]
        if self.stop_on_newline:
            pieces = tok.batch_decode([[i] for i in range(len(tok))])
            stop += [i for i, p in enumerate(pieces) if "\n" in p]
        self._stop_ids = torch.tensor(sorted(set(stop)), device=self._lm.device)
        if self._lm.device.type == "cpu" and self.prefix_cache_mb > 0:
            self._prefix = PrefixKVCache(self.prefix_cache_mb * 2**20)
        if self._ragged and not self._flat and not self._transformers_passes_ragged():
            import transformers

            print(f"llmrl: notice: transformers {transformers.__version__} does not hand the "
                  "flattened rows on to this model's cache update (5.24 and later do); the prior "
                  "runs its forwards unflattened", file=sys.stderr)
            self._ragged = False

    def load_trainable(self):
        """The plain model, loaded for training (no inference-only CPU kernels): GFlan wraps it
        in LoRA adapters, so this engine's sample and score then run with those adapters."""
        if self._lm is not None and self.cpu_kernels:
            raise ValueError("the engine's model was loaded with inference-only CPU kernels")
        self.cpu_kernels = False
        self.load()
        return self._lm

    @property
    def lm(self):
        """The loaded transformers model (``load`` first)."""
        return self._lm

    @property
    def tokenizer(self):
        """The loaded transformers tokenizer (``load`` first; left padding)."""
        return self._tokenizer

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.pad_token_id

    def tokenize(self, prompts: list[str]):
        """The prompts as this engine feeds them (chat template if set, left padding), on the
        model's device: a transformers ``BatchEncoding`` with ``input_ids``, ``attention_mask``."""
        self.load()
        return self._tokenizer([self._format(p) for p in prompts], return_tensors="pt",
                               padding=True, add_special_tokens=False).to(self._lm.device)

    def prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        """Each prompt's tokens as this engine feeds it (chat template if set), unpadded."""
        self.load()
        return self._tokenizer([self._format(p) for p in prompts],
                               add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def _transformers_passes_ragged(self) -> bool:
        """Whether transformers' forward of this model hands the ``ragged`` keyword on to the
        cache update (``ReservedLayer.update`` refuses a flattened forward without it): one
        token's flattened prefill into an empty cache, tried once at load."""
        from transformers import DynamicCache

        from .reserved_cache import RaggedRows, ReservedLayer

        lm, config = self._lm, self._lm.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads)
        cache = DynamicCache()
        cache.layers = [ReservedLayer((1, heads, 1, head_dim), 0, lm.dtype, lm.device)
                        for _ in range(config.num_hidden_layers)]
        for layer in cache.layers:
            layer.flattened = True
        zero = torch.zeros(1, dtype=torch.long, device=lm.device)
        ragged = RaggedRows(zero, zero, zero, 1, 1, [(0, 0, 1, 1)])
        try:
            self._forward_flat(zero, zero, cache, ragged)
        except RuntimeError as exc:
            if "flattened rows" not in str(exc):
                raise
            return False
        return True

    @torch.inference_mode()
    def warm_up(self) -> None:
        self.load()
        self._prefill(["Hello"])

    def _format(self, prompt: str) -> str:
        if not self.chat_template:
            return prompt
        return self._tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def _prefill(self, prompts: list[str], room: int = 0):
        """The prompts' (last logits, left-padded KV cache, mask, last positions); the cache's
        layers have ``room`` free positions after the prompts for keys/values to come."""
        from .reserved_cache import reserved_cache

        if self._prefix is not None:
            return self._prefill_each(prompts, room)
        tok, lm = self._tokenizer, self._lm
        batch = tok([self._format(p) for p in prompts], return_tensors="pt", padding=True,
                    add_special_tokens=False).to(lm.device)
        mask = batch["attention_mask"]
        self.stats.prompt_tokens += int(mask.sum())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
                 use_cache=True, logits_to_keep=1)
        cache = reserved_cache(out.past_key_values, torch.arange(len(prompts), device=lm.device),
                               room)
        return out.logits[:, -1].float(), cache, mask, positions[:, -1:]

    def _prefill_each(self, prompts: list[str], room: int):
        """``_prefill`` after each prompt's longest cached prefix, into a left-padded batch
        cache. With the CPU kernels the prompts' new tokens run as one flattened forward
        (``_prefill_ragged``); otherwise one prompt at a time."""
        from transformers import DynamicCache

        from .reserved_cache import ReservedLayer

        tok, lm = self._tokenizer, self._lm
        ids = [tok(self._format(prompt), add_special_tokens=False)["input_ids"]
               for prompt in prompts]
        width = max(len(i) for i in ids)
        config = lm.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads)
        shape = (len(prompts), heads, width, head_dim)
        batch = DynamicCache()
        batch.layers = [ReservedLayer(shape, room, lm.dtype, lm.device)
                        for _ in range(config.num_hidden_layers)]
        mask = torch.zeros(len(prompts), width, dtype=torch.long, device=lm.device)
        for row, prompt_ids in enumerate(ids):
            mask[row, width - len(prompt_ids):] = 1
        if self._ragged:
            for layer in batch.layers:
                layer.flattened = True
            logits = [None] * len(ids)
            for wave in self._prefill_waves(ids):
                for row, row_logits in zip(wave, self._prefill_ragged(ids, batch, wave)):
                    logits[row] = row_logits
        else:
            logits = [self._prefill_one(prompt_ids, batch, row) for row, prompt_ids in
                      enumerate(ids)]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return torch.stack(logits), batch, mask, positions[:, -1:]

    #: a prompt waits for the next flattened prefill when a prompt of this one shares more than
    #: this many tokens with it beyond its cached prefix (the tokens it then reuses cost more
    #: than the extra forward)
    WAVE_SHARE_TOKENS = 16

    def _prefill_waves(self, ids: list[list[int]]):
        """The rows in groups for ``_prefill_ragged``, one after the other: a prompt that shares
        a long prefix with another of its group would compute that prefix a second time, so
        it waits for the next group, which finds it in the prefix cache. (Prefilled one at a
        time, each prompt reuses what all earlier ones computed; the waves keep that reuse.)"""
        pending = list(range(len(ids)))
        while pending:
            wave, later = [], []
            for row in pending:
                cached = self._prefix.matched_length(ids[row])
                shared = max((common_length(ids[row], ids[other]) for other in wave), default=0)
                (later if shared > cached + self.WAVE_SHARE_TOKENS else wave).append(row)
            yield wave
            pending = later

    def _match_prefix(self, prompt_ids: list[int], batch, row: int) -> int:
        """Copy the longest cached prefix of ``prompt_ids`` into ``batch``'s row (the prompt
        is right-aligned, ending at the batch's width); its length, leaving >= 1 token to run
        (its logits start the answer)."""
        m, k, v = self._prefix.match(prompt_ids)
        m = min(m, len(prompt_ids) - 1)
        start = batch.layers[0].length - len(prompt_ids)
        for layer, target in enumerate(batch.layers if m else ()):
            target.keys[row, :, start : start + m] = k[layer, :, :m]
            target.values[row, :, start : start + m] = v[layer, :, :m]
        self.stats.prompt_tokens += len(prompt_ids)
        self.stats.reused_tokens += m
        return m

    def _keep_prefix(self, prompt_ids: list[int], batch, row: int) -> None:
        """Hand the prompt's keys/values, now in ``batch``'s row, to the prefix cache."""
        start = batch.layers[0].length - len(prompt_ids)
        self._prefix.insert(prompt_ids,
                            torch.stack([layer.keys[row, :, start:] for layer in batch.layers]),
                            torch.stack([layer.values[row, :, start:] for layer in batch.layers]))

    def _prefill_one(self, prompt_ids: list[int], batch, row: int) -> torch.Tensor:
        """One prompt's forward after its cached prefix; its keys/values go to ``batch``."""
        from transformers import DynamicCache

        lm, width = self._lm, batch.layers[0].length
        m = self._match_prefix(prompt_ids, batch, row)
        start = width - len(prompt_ids)
        cache = DynamicCache()
        for layer, source in enumerate(batch.layers if m else ()):
            cache.update(source.keys[row : row + 1, :, start : start + m],
                         source.values[row : row + 1, :, start : start + m], layer)
        out = lm(input_ids=torch.tensor([prompt_ids[m:]], device=lm.device),
                 position_ids=torch.arange(m, len(prompt_ids), device=lm.device)[None],
                 past_key_values=cache, use_cache=True, logits_to_keep=1)
        for (keys, values), target in zip(_layers(out.past_key_values), batch.layers):
            target.keys[row, :, start + m :] = keys[0, :, m:]
            target.values[row, :, start + m :] = values[0, :, m:]
        self._keep_prefix(prompt_ids, batch, row)
        return out.logits[0, -1].float()

    def _prefill_ragged(self, ids: list[list[int]], batch, wave: list[int]) -> list[torch.Tensor]:
        """The uncached tokens of the prompts ``wave`` (rows of ``batch``) as one flattened
        forward, with no padding rows in the linear layers: token j of a prompt's new part
        attends to its row's columns up to its own. Returns the prompts' last logits."""
        from .reserved_cache import RaggedRows

        device, width = self._lm.device, batch.layers[0].length
        new = [len(ids[row]) - self._match_prefix(ids[row], batch, row) for row in wave]
        queries = max(new)
        rows = torch.tensor([row for row, n in zip(wave, new) for _ in range(n)], device=device)
        slots = torch.cat([torch.arange(n, device=device) for n in new])
        columns = torch.cat([torch.arange(width - n, width, device=device) for n in new])
        tokens = torch.tensor([t for row, n in zip(wave, new) for t in ids[row][-n:]],
                              device=device)
        positions = torch.cat([torch.arange(len(ids[row]) - n, len(ids[row]), device=device)
                               for row, n in zip(wave, new)])
        starts = [0, *itertools.accumulate(new)]
        spans = [(row, start, n, len(ids[row])) for row, start, n in zip(wave, starts, new)]
        last = torch.tensor(starts[1:], device=device) - 1
        logits = self._forward_flat(tokens, positions, batch,
                                    RaggedRows(rows, slots, columns, queries, width, spans),
                                    keep=last)
        for row in wave:
            self._keep_prefix(ids[row], batch, row)
        return list(logits.float())

    def _forward_flat(self, tokens: torch.Tensor, positions: torch.Tensor, cache, ragged,
                      mask: torch.Tensor | None = None, keep: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """The logits (rows, vocabulary) of one flattened forward of ``tokens`` (n,) at
        ``positions`` (n,): ``cpu_kernels.flat_forward`` for a Llama-layout model, else
        transformers' forward, which hands ``ragged`` on to the cache and the attention.
        ``mask``: a decode step's tree mask; ``keep``: the rows whose logits to return."""
        if self._flat:
            return flat_forward(self._lm, tokens, positions, cache, ragged, mask, keep)
        if mask is None:  # a prefill, causal per prompt (``ragged.spans``): a 4-D mask, even
            # this placeholder, keeps transformers from building one of its own
            mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=tokens.device)
        out = self._lm(input_ids=tokens[None], position_ids=positions[None], attention_mask=mask,
                       past_key_values=cache, use_cache=True, ragged=ragged,
                       **({} if keep is None else {"logits_to_keep": keep}))
        return out.logits[0]

    def _chunks(self, items: list, fn) -> list:
        self.load()
        out = []
        for start in range(0, len(items), self.batch_size):
            out.extend(fn(items[start : start + self.batch_size]))
        return out

    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one token position holds, over all layers."""
        self.load()
        config = self._lm.config
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads)
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        element = torch.finfo(self._lm.dtype).bits // 8
        return 2 * config.num_hidden_layers * heads * head_dim * element

    def decode_batches(self, prompts: list[str], k: int) -> list[list[str]]:
        """Consecutive runs of at most ``batch_size`` prompts whose keys/values while decoding
        (left-padded prompt, then room for k answers) fit in ``max_batch_kv_mb``."""
        per_token = self.kv_bytes_per_token()
        budget = self.max_batch_kv_mb * 2**20
        room = k * (self.max_new_tokens - 1)
        batches, width = [], 0
        for prompt in prompts:
            length = len(self._tokenizer(self._format(prompt), add_special_tokens=False)
                         ["input_ids"])
            wider = max(width, length)
            if batches and len(batches[-1]) < self.batch_size and \
                    (len(batches[-1]) + 1) * (wider + room) * per_token <= budget:
                batches[-1].append(prompt)
                width = wider
            else:
                batches.append([prompt])
                width = length
        return batches

    # -- sample mode ----------------------------------------------------------------------
    def sample(self, jobs: list[tuple[str, int]], k: int) -> list[list[str]]:
        """k completions per (prompt, draw block) job, decoded, uncut: block b holds draws
        b*k .. b*k + k - 1 of the prompt's sequence, each from its own seeded stream."""
        self.load()
        prompts = [prompt for prompt, _ in jobs]
        draws = [draw for _, draw in jobs]
        out, start = [], 0
        for batch in self.decode_batches(prompts, k):
            out.extend(self._sample(batch, k, draws[start : start + len(batch)]))
            start += len(batch)
        return out

    @torch.inference_mode()
    def _sample(self, prompts: list[str], k: int,
                draws: list[int] | None = None) -> list[list[str]]:
        """k completions per prompt (``draws``: each prompt's draw block, default 0), decoded
        with special tokens skipped.

        The k samples of a prompt decode as a tree on one row of keys/values: the prompt once,
        then one position per *node* (a distinct token prefix drawn so far). Samples that drew
        the same tokens share a node (one model query, one set of logits); each step appends a
        position for every live child node, and a 4-D attention mask lets a node see only the
        prompt and its own ancestors. So the prompt's keys/values are held once, not copied to
        each of the k samples, and finished samples stop adding queries; a prompt whose samples
        have all finished leaves the batch (its row dropped, the live rows moved up in place), so
        later steps run no padding queries for it. The buffers have room for the answers, so
        keys/values are written in place (``reserved_cache.py``).
        """
        from .reserved_cache import RaggedRows, first_moved

        tok, lm = self._tokenizer, self._lm
        device = lm.device
        room = k * (self.max_new_tokens - 1)
        logits, cache, mask, position = self._prefill(prompts, room)
        for layer in cache.layers:
            layer.flattened = self._ragged
        n_prompts, width = mask.shape
        # one uniform per (prompt, draw, step), from a stream seeded by the prompt and the draw's
        # index in the prompt's sequence (block b holds draws b*k .. b*k + k - 1)
        draws = draws or [0] * len(prompts)
        uniforms = torch.stack([
            torch.rand(self.max_new_tokens, generator=torch.Generator().manual_seed(
                stable_seed(self.seed, p, block * k + j)))
            for p, block in zip(prompts, draws) for j in range(k)
        ]).to(device)
        samples = n_prompts * k
        generated = torch.full((samples, self.max_new_tokens), tok.pad_token_id, device=device)
        finished = torch.zeros(samples, dtype=torch.bool, device=device)
        # nodes: at first the prompts themselves; `logits` holds each node's next-token logits
        node = torch.arange(n_prompts, device=device).repeat_interleave(k)  # sample -> node
        node_prompt = torch.arange(n_prompts, device=device)  # node -> its prompt (row)
        prompt_seen = torch.zeros(n_prompts, width + room, dtype=torch.bool, device=device)
        prompt_seen[:, :width] = mask.bool()
        node_seen = prompt_seen  # node -> the key/value columns its next query attends to
        filled = width
        for step in range(self.max_new_tokens):
            live = (~finished).nonzero().squeeze(-1)
            token = self._draw(logits[node[live]], uniforms[live, step])
            generated[live, step] = token
            self.stats.tokens += len(live)
            finished[live] = torch.isin(token, self._stop_ids)
            if bool(finished.all()) or step + 1 == self.max_new_tokens:
                break
            live = (~finished).nonzero().squeeze(-1)
            vocab = logits.shape[-1]
            # the live children: distinct (parent node, token); sorted, so grouped by prompt
            children, node[live] = torch.unique(node[live] * vocab + generated[live, step],
                                                return_inverse=True)
            parents, tokens = children // vocab, children % vocab
            node_prompt = node_prompt[parents]
            active = torch.unique(node_prompt)  # rows that still have a live node
            if len(active) < n_prompts:  # the others are done: drop their rows from the batch
                moved = first_moved(active)
                for layer in cache.layers:
                    layer.keep_rows(active, moved)
                node_prompt = torch.searchsorted(active, node_prompt)  # the rows' new numbers
                prompt_seen, position = prompt_seen[active], position[active]
                n_prompts = len(active)
            counts = torch.bincount(node_prompt, minlength=n_prompts)
            slot = torch.arange(len(children), device=device) - (counts.cumsum(0) - counts)[
                node_prompt]
            queries = int(counts.max())
            columns = filled + slot
            node_seen = node_seen[parents].clone()
            node_seen[torch.arange(len(children), device=device), columns] = True
            filled += queries
            # padding queries (prompts with fewer children) see their prompt; nobody sees them
            seen = prompt_seen[:, None, :filled].repeat(1, queries, 1)
            seen[node_prompt, slot] = node_seen[:, :filled]
            if self._ragged:  # the children as one unpadded row sequence
                logits = self._forward_flat(
                    tokens, position[node_prompt, 0] + 1 + step, cache,
                    RaggedRows(node_prompt, slot, columns, queries, filled), mask=seen[:, None]
                ).float()
            else:
                input_ids = torch.full((n_prompts, queries), tok.pad_token_id, device=device)
                input_ids[node_prompt, slot] = tokens
                out = lm(input_ids=input_ids, attention_mask=seen[:, None],
                         position_ids=(position + 1 + step).expand(n_prompts, queries),
                         past_key_values=cache, use_cache=True)
                logits = out.logits[node_prompt, slot].float()
        texts = tok.batch_decode(generated, skip_special_tokens=True)
        return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]

    def _draw(self, logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sampling with temperature and nucleus (top-p) filtering."""
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p >= 1.0:  # no nucleus: the CDF in vocabulary order (no sort) will do
            return self._invert_cdf(probs, uniform)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < self.top_p
        return order.gather(-1, self._invert_cdf(sorted_probs * keep, uniform)[:, None]).squeeze(-1)

    @staticmethod
    def _invert_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """The index where each row's cumulative (unnormalised) mass first reaches u * total."""
        cdf = probs.cumsum(-1)
        target = (uniform * cdf[:, -1]).unsqueeze(-1)
        return torch.searchsorted(cdf, target).clamp(max=cdf.shape[-1] - 1).squeeze(-1)

    # -- score mode -----------------------------------------------------------------------
    def score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """Summed token log-prob of each candidate (``candidate_ids``) after its prompt."""
        pairs = list(zip(prompts, candidates))
        return self._chunks(pairs, lambda chunk: self._score_batch(
            [p for p, _ in chunk], [c for _, c in chunk]))

    def candidate_ids(self, candidate: str) -> list[int]:
        """The tokens of a candidate as it continues the prompt ("Action:" + " left")."""
        text = candidate if self.chat_template else " " + candidate
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def _score_batch(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """Summed log p(candidate tokens | prompt): one prompt forward, candidates on its cache."""
        device = self._lm.device
        first_logits, cache, mask, position = self._prefill(prompts)
        owner = [i for i, cands in enumerate(candidates) for _ in cands]
        ids = [self.candidate_ids(c) for cands in candidates for c in cands]
        length = max(len(t) for t in ids)
        rows = len(ids)
        tokens = torch.full((rows, length), self._tokenizer.pad_token_id, device=device)
        valid = torch.zeros((rows, length), dtype=torch.long, device=device)
        for r, t in enumerate(ids):
            tokens[r, : len(t)] = torch.tensor(t, device=device)
            valid[r, : len(t)] = 1
        self.stats.tokens += int(valid.sum())
        index = torch.tensor(owner, device=device)
        # log p(first token) comes from the prompt's last position
        first = torch.log_softmax(first_logits[index], -1).gather(-1, tokens[:, :1]).squeeze(-1)
        total = first
        if length > 1:
            vocab = first_logits.shape[-1]
            row_kv = (mask.shape[1] + length) * self.kv_bytes_per_token()
            step = max(1, min(self.max_score_logits // (length * vocab),
                              self.max_batch_kv_mb * 2**20 // row_kv))
            rest = []
            for start in range(0, rows, step):
                part = index[start : start + step]
                sub = select_cache(cache, part)
                out = self._lm(
                    input_ids=tokens[start : start + step, :-1],
                    attention_mask=torch.cat([mask[part], valid[start : start + step, :-1]], 1),
                    position_ids=position[part] + 1 + torch.arange(length - 1, device=device),
                    past_key_values=sub, use_cache=True,
                )
                logp = torch.log_softmax(out.logits.float(), -1)
                picked = logp.gather(-1, tokens[start : start + step, 1:, None]).squeeze(-1)
                rest.append((picked * valid[start : start + step, 1:]).sum(-1))
            total = total + torch.cat(rest)
        sums = total.tolist()
        out, r = [], 0
        for cands in candidates:
            out.append(sums[r : r + len(cands)])
            r += len(cands)
        return out


def select_cache(cache, index: torch.Tensor):
    """A copy of ``cache`` holding the rows ``index`` (repeats allowed)."""
    copy = type(cache)()
    for layer, (keys, values) in enumerate(_layers(cache)):
        copy.update(keys[index], values[index], layer)
    return copy


def _layers(cache):
    return [(layer.keys, layer.values) for layer in cache.layers]
