"""llmrl: reinforcement learning with large-language-model priors (Yan et al., ICLR 2025)."""

__version__ = "0.1.0"
