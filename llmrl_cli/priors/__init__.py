"""Action priors: what proposes the candidate actions the Q-function chooses among."""

from __future__ import annotations

from ..errors import UserError
from ..paths import cache_dir
from .base import (ActionPrior, ExpertMixPrior, PriorQuery, PriorStats, UniformMixPrior,
                   UniformPrior)
from .cache import ProposalCache

_LLM_OPTIONS = ("--prior-mode sample|score, --k, --projection paper|normalised (sample), "
                "--max-new-tokens, --stop-on-newline (sample), --prior-draws fresh|memo, "
                "--temperature, --top-p, --chat-template (sample and score), "
                "--prior-permutations N (score), --prior-uniform-mix EPS, --no-prior-cache")

#: name -> one-line description with its options (shown by `llmrl priors`)
PRIORS = {
    "uniform": "every admissible action once (what makes the dqn/cql baselines); option: "
    "baseline_candidates N (the list cut or repeated to N entries, as the paper's ALFWorld DQN)",
    "local": "a causal LM run in-process (default: the embedded SmolLM2-135M-Instruct); "
    "options: --prior-model FOLDER|FILE.gguf, " + _LLM_OPTIONS,
    "vllm": "a model served by vLLM's OpenAI-compatible API, one request per batch step; "
    "options: --prior-url URL (default http://127.0.0.1:8000), --prior-model SERVED_NAME, "
    + _LLM_OPTIONS.replace(", --chat-template (sample and score)", ""),
    "expert-mix:EPS": "synthetic prior of known quality: the env expert's action with "
    "probability 1-EPS, else a uniformly random admissible action (EPS in [0, 1]); options: --k",
}


def parse_expert_mix(name: str) -> float | None:
    """EPS of an ``expert-mix:EPS`` prior name, None for other names; UserError if malformed."""
    if not name.startswith("expert-mix"):
        return None
    head, _, value = name.partition(":")
    try:
        eps = float(value)
    except ValueError:
        eps = -1.0
    if head != "expert-mix" or not 0.0 <= eps <= 1.0:
        raise UserError(f"bad prior {name!r}: write expert-mix:EPS with EPS in [0, 1], "
                        "e.g. expert-mix:0.5")
    return eps


def check_prior_name(name: str) -> None:
    if parse_expert_mix(name) is None and name not in PRIORS:
        raise UserError(f"unknown prior {name!r}; choose one of: {', '.join(PRIORS)}")


def preflight(cfg) -> None:
    """Fail fast, before a run starts, on a prior that cannot answer (a vLLM server down)."""
    from .vllm import DEFAULT_URL, VLLMPrior

    if cfg.prior == "vllm":
        VLLMPrior(url=cfg.prior_url or DEFAULT_URL, model=cfg.prior_model).check()
    agent = cfg.agent
    if cfg.algo == "gflan-prior" and getattr(agent, "kl_prior", "base") == "vllm":
        VLLMPrior(url=agent.kl_prior_url or DEFAULT_URL,
                  model=agent.kl_prior_model or cfg.prior_model).check()


def make_prior(cfg, device: str) -> ActionPrior:
    """Build the prior a RunConfig asks for (with the uniform mix wrapper when set)."""
    check_prior_name(cfg.prior)
    llm_settings = dict(
        seed=cfg.seed, model=cfg.prior_model, mode=cfg.prior_mode, temperature=cfg.temperature,
        top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, projection=cfg.projection,
        stop_on_newline=cfg.stop_on_newline,
        draw_pool=cfg.prior_draw_pool if cfg.prior_draws == "fresh" else 1,
        chat_template=cfg.chat_template, permutations=cfg.prior_permutations,
        cache=ProposalCache(cache_dir() / "proposals.sqlite" if cfg.prior_cache else None),
    )
    eps = parse_expert_mix(cfg.prior)
    if eps is not None:
        prior: ActionPrior = ExpertMixPrior(seed=cfg.seed, eps=eps)
    elif cfg.prior == "uniform":
        prior = UniformPrior(seed=cfg.seed, length=cfg.baseline_candidates)
    elif cfg.prior == "local":
        from .local import LocalLLMPrior

        prior = LocalLLMPrior(device=device, dtype=cfg.prior_dtype,
                              prefix_cache_mb=cfg.prefix_cache_mb,
                              cpu_kernels=cfg.prior_cpu_kernels,
                              max_batch_kv_mb=cfg.prior_batch_kv_mb, **llm_settings)
    else:
        from .vllm import DEFAULT_URL, VLLMPrior

        prior = VLLMPrior(url=cfg.prior_url or DEFAULT_URL, timeout=cfg.prior_timeout_s,
                          retries=cfg.prior_retries, **llm_settings)
    if cfg.prior_uniform_mix > 0:
        prior = UniformMixPrior(seed=cfg.seed, base=prior, eps=cfg.prior_uniform_mix)
    return prior


__all__ = ["ActionPrior", "PriorQuery", "PriorStats", "PRIORS", "make_prior", "ProposalCache",
           "parse_expert_mix", "check_prior_name", "preflight"]
