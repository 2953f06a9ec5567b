import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"

# Converted models are shared by the whole session (converting SmolLM2 from GGUF takes ~20 s);
# proposal caches are per test (see the `cache_dir` fixture).
os.environ.setdefault("LLMRL_MODEL_DIR", str(ROOT / ".cache" / "llmrl" / "models"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A fresh proposal cache for every test."""
    path = tmp_path / "llmrl-cache"
    monkeypatch.setenv("LLMRL_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def encoder():
    from llmrl_cli.encoders import TextEncoder

    return TextEncoder()
