"""The local inference engine (``local.py``): a causal LM in-process behind ``load``, ``sample``
and ``score``, with its CPU kernels (``cpu_kernels.py``), prefix KV cache
(``prefix_cache.py``), in-place decode buffers (``reserved_cache.py``) and model loading
(``models.py``). The ``local`` prior and the GFlan policy use it through this API only."""

from .local import LocalEngine, select_cache
from .models import (EMBEDDED_MODEL, converted_gguf_dir, embedded_gguf, export_gguf,
                     load_causal_lm, resolve_model_path)

__all__ = ["LocalEngine", "select_cache", "EMBEDDED_MODEL", "converted_gguf_dir",
           "embedded_gguf", "export_gguf", "load_causal_lm", "resolve_model_path"]
