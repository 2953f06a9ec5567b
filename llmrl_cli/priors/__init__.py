"""Action priors: what proposes the candidate actions the Q-function chooses among."""

from __future__ import annotations

from ..errors import UserError
from ..paths import cache_dir
from .base import ActionPrior, PriorQuery, PriorStats, UniformMixPrior, UniformPrior
from .cache import ProposalCache

#: name -> one-line description with its options (shown by `llmrl priors`)
PRIORS = {
    "uniform": "every admissible action once (what makes the dqn/cql baselines); no options",
    "local": "a causal LM run in-process (default: embedded SmolLM2-135M-Instruct); options: "
    "--prior-model PATH|.gguf, --prior-mode sample, --k, --projection default|paper, "
    "--temperature, --top-p, --chat-template, --prior-uniform-mix EPS",
}


def make_prior(cfg, device: str) -> ActionPrior:
    """Build the prior a RunConfig asks for (with the uniform mix wrapper when set)."""
    from .local import LocalLLMPrior

    if cfg.prior == "uniform":
        prior: ActionPrior = UniformPrior(seed=cfg.seed)
    elif cfg.prior == "local":
        cache = ProposalCache(cache_dir() / "proposals.sqlite" if cfg.prior_cache else None)
        prior = LocalLLMPrior(
            seed=cfg.seed, model=cfg.prior_model, device=device, temperature=cfg.temperature,
            top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, projection=cfg.projection,
            chat_template=cfg.chat_template, cache=cache,
        )
    else:
        raise UserError(f"unknown prior {cfg.prior!r}; choose one of: {', '.join(PRIORS)}")
    if cfg.prior_uniform_mix > 0:
        prior = UniformMixPrior(seed=cfg.seed, base=prior, eps=cfg.prior_uniform_mix)
    return prior


__all__ = ["ActionPrior", "PriorQuery", "PriorStats", "PRIORS", "make_prior", "ProposalCache"]
