"""Where llmrl keeps shared state: the proposal cache and converted models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LLMRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/llmrl``, else ``~/.cache/llmrl``."""
    if os.environ.get("LLMRL_CACHE_DIR"):
        return Path(os.environ["LLMRL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmrl"


def model_dir() -> Path:
    """Converted models: ``$LLMRL_MODEL_DIR``, else ``<cache_dir>/models``."""
    if os.environ.get("LLMRL_MODEL_DIR"):
        return Path(os.environ["LLMRL_MODEL_DIR"])
    return cache_dir() / "models"
