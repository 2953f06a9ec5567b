"""Faster CPU kernels for a frozen fp32 prior model (``LocalEngine.cpu_kernels``).

Three changes; the model computes the same numbers up to float rounding:

- **Packed linear layers.** Each ``nn.Linear`` runs as oneDNN's linear on a weight reordered once
  into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``), instead of MKL's sgemm
  on the plain weight: faster, most at decode shapes (a few rows); outputs agree with
  ``F.linear`` up to float rounding. Inference only: the packed op has no autograd. The tied
  lm_head gets a packed copy of its own; the plain weights of the other layers are freed. Linear layers that
  read the same input -- q/k/v, and the MLP's gate/up -- are packed as one (``FusedLinears``):
  one call with the weights stacked, split by columns (the modules transformers calls become
  ``SplitLinear`` parts of it), so there is no second copy of their weights.
- **Grouped-query attention under a mask.** transformers' ``sdpa`` path copies each layer's
  key/value heads up to the query heads (``repeat_kv``) whenever an attention mask is given on
  CPU -- and our decode always gives one (the sample tree's 4-D mask). ``sdpa_gqa`` folds the
  query heads that share a key/value head into one block of query rows instead, which is
  faster than both the copy and the kernel's own ``enable_gqa`` path at decode sizes; equal up
  to rounding.
- **Flattened forwards.** The prior passes the rows of all its prompts as one unpadded
  sequence (``reserved_cache.RaggedRows``), so the linear layers compute no padding rows; the
  attention here puts each row back with its prompt. In a decode step (``ragged_attention``)
  each prompt's tree nodes form one block of query rows under the tree mask. In a prefill
  (``prefill_attention``) each prompt's new tokens attend causally, one kernel call per prompt
  with the query heads folded. For a Llama-layout model (``FLAT_FORWARD_MODELS``) these
  forwards run layer by layer on the model's own modules (``flat_forward``), without
  transformers' per-layer plumbing, with the fused projections, one rotary op over the query
  and key heads together and the residual adds as post-ops of the linear layers before them;
  other models pass the rows through transformers' forward.

It is off (``cpu_kernels=False``) for the benchmark's reference mode, which runs transformers
as the paper's code did, and for GFlan's policy, which trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION = "llmrl_sdpa_gqa"
#: the row count oneDNN's weight layout is chosen for (the best of 16, 32, 64, 128 over
#: prefill and decode shapes together; benchmarks/README.md)
PACK_ROWS_HINT = 128


def sdpa_gqa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' sdpa attention, but under a mask the query heads that share a key/value
    head are folded into its query rows (``fold_query_heads``) instead of the keys/values being
    copied to every query head."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ragged = kwargs.get("ragged")
    if ragged is not None:
        return ragged_attention(query, key, value, attention_mask, ragged, scaling), None
    groups = getattr(module, "num_key_value_groups", 1)
    if attention_mask is None or groups == 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if attention_mask.shape[1] != 1:  # a mask per head: the kernel's own grouped-query path
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                             dropout_p=dropout, scale=scaling, enable_gqa=True)
    else:
        out = fold_query_heads(query, key, value, attention_mask, dropout, scaling)
    return out.transpose(1, 2).contiguous(), None


def ragged_attention(query, key, value, mask, ragged, scaling=None):
    """Attention for a flattened forward (``reserved_cache.RaggedRows``): ``query``
    (1, heads, n, d) holds n rows of several prompts; each goes to its prompt's block of
    ``ragged.queries`` query rows, the blocks attend to their prompt's keys/values (batch,
    kv_heads, k, d) under ``mask`` (batch, 1, queries, k), and the n outputs come back as
    (1, n, heads, d). Padding query rows cost attention only, not the linear layers."""
    if ragged.spans is not None:
        return prefill_attention(query, key, value, ragged, scaling)
    heads, dim = query.shape[1], query.shape[-1]
    blocks = query.new_zeros(key.shape[0], heads, ragged.queries, dim)
    blocks[ragged.rows, :, ragged.slots] = query[0].transpose(0, 1)
    if heads == key.shape[1]:
        out = F.scaled_dot_product_attention(blocks, key, value, attn_mask=mask, scale=scaling)
    else:
        out = fold_query_heads(blocks, key, value, mask, scaling=scaling)
    return out[ragged.rows, :, ragged.slots].unsqueeze(0)


def prefill_attention(query, key, value, ragged, scaling=None):
    """Causal attention of each prompt's new tokens (``ragged.spans``) on its row: one kernel
    call per prompt, on the prompt's cached prefix and new tokens together, with the query heads
    that share a key/value head folded into one block of rows (``fold_query_heads``) under the
    causal mask of the new tokens (``causal_mask``). The masked-out products are computed, but
    the folded call is faster on Overcooked- and ALFWorld-sized prompts than the flash kernel's
    own causal path on unfolded heads (keys/values copied to each query head) plus a second
    call on the prefix."""
    width = ragged.length
    out = torch.empty_like(query)
    for row, start, new, length in ragged.spans:
        columns = slice(width - length, width)
        out[:, :, start : start + new] = fold_query_heads(
            query[:, :, start : start + new], key[row : row + 1, :, columns],
            value[row : row + 1, :, columns],
            causal_mask(new, length, query.dtype, query.device)[None, None], scaling=scaling)
    return out.transpose(1, 2)


def causal_mask(new: int, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The additive (0 / -inf) mask of a prompt's last ``new`` tokens over its ``length``
    positions: token i of them sees positions up to ``length - new + i``."""
    return torch.full((new, length), float("-inf"), dtype=dtype, device=device).triu_(
        length - new + 1)


def fold_query_heads(query, key, value, mask, dropout=0.0, scaling=None):
    """Attention of ``query`` (batch, heads, q, d) on ``key``/``value`` (batch, kv_heads, k, d)
    under a head-shared ``mask`` (batch, 1, q, k), run as (batch, kv_heads, groups * q) query
    rows: each key/value head's group of query heads is one longer query block, which the CPU
    flash kernel runs faster at decode sizes than its own grouped-query path. The same
    attention; rounding may differ."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    folded = query.reshape(batch, kv_heads, groups * length, dim)
    if mask.shape[-2] != groups * length:  # not folded yet
        mask = mask.expand(batch, 1, length, mask.shape[-1]).repeat(1, 1, groups, 1)
    out = F.scaled_dot_product_attention(folded, key, value, attn_mask=mask, dropout_p=dropout,
                                         scale=scaling)
    return out.reshape(batch, heads, length, dim)


def register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, sdpa_gqa)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


class PackedLinear(nn.Module):
    """``nn.Linear`` for inference, on a oneDNN-packed copy of its weight."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self._pack(linear.weight.detach(),
                   None if linear.bias is None else linear.bias.detach().clone())

    def _pack(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Hold ``weight`` (out, in) packed and ``bias`` as (non-persistent) buffers."""
        self.out_features, self.in_features = weight.shape
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(
            weight, PACK_ROWS_HINT), persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def plus(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``self(x) + residual``, the add run by oneDNN as a post-op of the linear (no
        separate pass over the output)."""
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias,
                                                         "add")


class FusedLinears(PackedLinear):
    """Linear layers that read the same input (attention's q/k/v, the MLP's gate/up) as one
    packed linear: their weights (and biases) stacked by output rows, so one oneDNN call
    replaces several; ``split`` cuts the output back into the layers' parts (what that saves:
    ``flat_forward``)."""

    def __init__(self, linears: list[nn.Linear]) -> None:
        nn.Module.__init__(self)  # not PackedLinear's: there is no single linear to take
        self.sizes = [linear.out_features for linear in linears]
        weight = torch.cat([linear.weight.detach() for linear in linears])
        bias = None
        if any(linear.bias is not None for linear in linears):
            bias = torch.cat([linear.bias.detach() if linear.bias is not None
                              else weight.new_zeros(linear.out_features) for linear in linears])
        self._pack(weight, bias)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return out.split(self.sizes, dim=-1)


class SplitLinear(nn.Module):
    """Part ``index`` of a ``FusedLinears``, where transformers calls the original layer
    (``q_proj``, ...). The first part called on an input runs the fused linear and hands each
    sibling its part of the output for that same input tensor; a part called on any other
    input runs the fused linear itself. So any call order gives the layers' outputs, and
    transformers' q/k/v (gate/up) sequence costs one call."""

    def __init__(self, fused: FusedLinears, index: int, siblings: list) -> None:
        super().__init__()
        self.__dict__["fused"] = fused  # not a submodule: its owner registers it once
        self.index, self.siblings = index, siblings
        self.in_features, self.out_features = fused.in_features, fused.sizes[index]
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pending, self.pending = self.pending, None
        if pending is not None and pending[0] is x:
            return pending[1]
        parts = self.fused.split(self.fused(x))
        for sibling, part in zip(self.siblings, parts):
            if sibling is not self:
                sibling.pending = (x, part)
        return parts[self.index]


#: linear layers fused when a module has all of them, under the name the fused one gets
FUSED_PROJECTIONS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"),
                     "gate_up_proj": ("gate_proj", "up_proj")}


def fuse_projections(module: nn.Module) -> None:
    """Pack each group of ``FUSED_PROJECTIONS`` that ``module`` holds (plain ``nn.Linear``
    layers of one input size) as one ``FusedLinears``, registered as ``module.<fused name>``,
    with ``SplitLinear`` parts in the original layers' places."""
    for fused_name, names in FUSED_PROJECTIONS.items():
        linears = [getattr(module, name, None) for name in names]
        if not all(isinstance(linear, nn.Linear) for linear in linears) or \
                len({linear.in_features for linear in linears}) != 1:
            continue
        fused = FusedLinears(linears)
        setattr(module, fused_name, fused)
        siblings: list[SplitLinear] = []
        for index, name in enumerate(names):
            part = SplitLinear(fused, index, siblings)
            siblings.append(part)
            setattr(module, name, part)


def packing_available() -> bool:
    try:
        probe = nn.Linear(4, 4)
        with torch.inference_mode():
            out = PackedLinear(probe)(torch.ones(1, 4))
        return torch.allclose(out, probe(torch.ones(1, 4)).detach(), atol=1e-5)
    except (RuntimeError, AttributeError):
        return False


def speed_up_cpu_model(lm: nn.Module) -> bool:
    """Pack ``lm``'s linear layers and switch it to ``sdpa_gqa``, in place; False (and ``lm``
    untouched) unless it is an fp32 model on CPU and this torch build has oneDNN."""
    first = next(lm.parameters())
    if first.device.type != "cpu" or first.dtype != torch.float32 or not packing_available():
        return False
    register_attention()
    lm.set_attn_implementation(ATTENTION)
    for module in list(lm.modules()):
        fuse_projections(module)
    for parent in list(lm.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, PackedLinear(child))
    release_freed_memory()
    return True


def release_freed_memory() -> None:
    """Hand the plain weights' freed memory back to the OS. glibc keeps it in its heap
    otherwise, and the process would keep both the plain and the packed weights' memory."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to trim
        pass


#: decoders whose layers ``flat_forward`` runs: the Llama layout (RMSNorms, rotary q/k, SiLU
#: gated MLP; qwen2's q/k/v biases live in its linear layers)
FLAT_FORWARD_MODELS = ("llama", "mistral", "qwen2")


def runs_flat_forward(lm: nn.Module) -> bool:
    """Whether ``flat_forward`` can run ``lm`` (a packed model of a ``FLAT_FORWARD_MODELS``
    type with a SiLU MLP, no sliding window, and its projections fused)."""
    config = lm.config
    return (config.model_type in FLAT_FORWARD_MODELS and config.hidden_act == "silu"
            and not getattr(config, "use_sliding_window", False)
            and getattr(config, "sliding_window", None) is None
            and all(isinstance(getattr(layer.self_attn, "qkv_proj", None), FusedLinears)
                    and isinstance(getattr(layer.mlp, "gate_up_proj", None), FusedLinears)
                    and isinstance(layer.self_attn.o_proj, PackedLinear)
                    and isinstance(layer.mlp.down_proj, PackedLinear)
                    for layer in lm.model.layers))


def flat_forward(lm: nn.Module, tokens: torch.Tensor, positions: torch.Tensor, cache, ragged,
                 mask: torch.Tensor | None = None, keep: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """``lm``'s logits for one flattened forward (``tokens``, ``positions``: (n,); ``ragged``
    says where the rows go), run layer by layer on the model's own modules instead of through
    transformers' forward. The same computation in the same order (the RMSNorms as torch's
    fused op, which gave the same numbers here) without transformers' per-layer plumbing
    (keyword passing, mask handling, output records), and with a decode step's mask folded and
    made additive once, not per layer; with the fused q/k/v and gate/up projections, one rotary
    op over the query and key heads, and the residual adds as post-ops. The same sampled
    texts (tests/test_cpu_kernels.py).
    ``mask``: a decode step's (batch, 1, queries, length) tree mask; ``keep``: the rows whose
    logits to return (all when None)."""
    model, n = lm.model, len(tokens)
    heads, kv_heads = lm.config.num_attention_heads, lm.config.num_key_value_heads
    if mask is not None:  # once, not per layer: folded for the query heads, made additive
        mask = torch.zeros(mask.shape, dtype=lm.dtype, device=mask.device).masked_fill_(
            ~mask, float("-inf")).repeat(1, 1, heads // kv_heads, 1)
    hidden = model.embed_tokens(tokens)
    cos, sin = model.rotary_emb(hidden[None], positions[None])
    cos, sin = cos[0, :, None], sin[0, :, None]  # (n, 1, head_dim): broadcast over heads
    for layer, kv in zip(model.layers, cache.layers):
        attn, mlp = layer.self_attn, layer.mlp
        x = rms_norm(hidden, layer.input_layernorm)
        qkv = attn.qkv_proj(x).view(n, heads + 2 * kv_heads, attn.head_dim)
        rotated = rotary(qkv[:, : heads + kv_heads], cos, sin)  # the query and key heads
        query = rotated[:, :heads].transpose(0, 1)[None]
        key = rotated[:, heads:].transpose(0, 1)[None]
        value = qkv[:, heads + kv_heads :].transpose(0, 1)[None]
        keys, values = kv.update(key, value, kwargs={"ragged": ragged})
        out = ragged_attention(query, keys, values, mask, ragged, attn.scaling)
        hidden = attn.o_proj.plus(out.reshape(n, -1), hidden)
        gate, up = mlp.gate_up_proj.split(mlp.gate_up_proj(rms_norm(
            hidden, layer.post_attention_layernorm)))
        hidden = mlp.down_proj.plus(F.silu(gate) * up, hidden)
    if keep is not None:
        hidden = hidden[keep]
    return lm.lm_head(rms_norm(hidden, model.norm))


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """transformers' Llama rotary embedding (``apply_rotary_pos_emb``) of ``x`` (n, heads,
    head_dim): ``x * cos + rotate_half(x) * sin``, the same ops, on all heads at once."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def rms_norm(hidden: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """transformers' Llama RMSNorm module ``norm`` as torch's one fused op."""
    return F.rms_norm(hidden, norm.weight.shape, norm.weight, norm.variance_epsilon)
