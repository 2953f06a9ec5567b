"""The CPU prior's kernels: packed linears and grouped-query attention compute what the plain
model does, and oneDNN's per-shape caches stay bounded."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmrl_cli.engine.cpu_kernels import (
    FusedLinears, PackedLinear, SplitLinear, fuse_projections, sdpa_gqa, speed_up_cpu_model)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 64), (16, 64), (3, 7, 64), (1, 153, 64)])
def test_packed_linear_matches_linear(shape, bias):
    torch.manual_seed(0)
    linear = nn.Linear(64, 96, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        packed, plain = PackedLinear(linear)(x), linear(x)
    assert packed.shape == plain.shape == (*shape[:-1], 96)
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)


def test_fused_projections_give_each_layer_its_output_in_any_call_order():
    torch.manual_seed(0)
    attention = nn.Module()
    attention.q_proj = nn.Linear(64, 96, bias=True)  # qwen2-like: q/k/v biases
    attention.k_proj = nn.Linear(64, 32, bias=True)
    attention.v_proj = nn.Linear(64, 32, bias=False)
    plain = {name: getattr(attention, name) for name in ("q_proj", "k_proj", "v_proj")}
    x, other = torch.randn(5, 64), torch.randn(3, 64)
    with torch.inference_mode():
        expected = {name: linear(x) for name, linear in plain.items()}
        fuse_projections(attention)
        assert isinstance(attention.qkv_proj, FusedLinears)
        assert all(isinstance(getattr(attention, n), SplitLinear) for n in plain)
        assert [out.shape[-1] for out in attention.qkv_proj.split(attention.qkv_proj(x))] == \
            [96, 32, 32]
        for order in (("q_proj", "k_proj", "v_proj"), ("v_proj", "q_proj", "k_proj")):
            for name in order:
                torch.testing.assert_close(getattr(attention, name)(x), expected[name],
                                           rtol=1e-5, atol=1e-5)
        # a part called on another input than its sibling's computes its own
        attention.q_proj(x)
        torch.testing.assert_close(attention.k_proj(other), plain["k_proj"](other),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(attention.v_proj(x), expected["v_proj"], rtol=1e-5, atol=1e-5)
    assert sum(isinstance(m, FusedLinears) for m in attention.modules()) == 1


def test_packed_linear_adds_the_residual_as_a_post_op():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=False)
    x, residual = torch.randn(7, 64), torch.randn(7, 48)
    with torch.inference_mode():
        torch.testing.assert_close(PackedLinear(linear).plus(x, residual), linear(x) + residual,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_batch", [4, 1])
def test_grouped_attention_under_a_mask_matches_repeated_heads(mask_batch):
    torch.manual_seed(0)
    query = torch.randn(4, 9, 5, 64)
    key, value = torch.randn(4, 3, 40, 64), torch.randn(4, 3, 40, 64)
    mask = torch.rand(mask_batch, 1, 5, 40) > 0.3
    mask[..., 0] = True

    class Attention(nn.Module):
        num_key_value_groups = 3

    out, _ = sdpa_gqa(Attention(), query, key, value, mask, scaling=0.125)
    repeated = F.scaled_dot_product_attention(
        query, key.repeat_interleave(3, dim=1), value.repeat_interleave(3, dim=1),
        attn_mask=mask, scale=0.125)
    assert out.shape == (4, 5, 9, 64)
    torch.testing.assert_close(out, repeated.transpose(1, 2), rtol=1e-5, atol=1e-6)
    # a query that sees only key 0 gets value 0 exactly (the fold keeps heads and rows apart)
    mask = torch.zeros(4, 1, 5, 40, dtype=torch.bool)
    mask[..., 0] = True
    out, _ = sdpa_gqa(Attention(), query, key, value, mask, scaling=0.125)
    expected = value[:, :, :1].repeat_interleave(3, dim=1).expand(4, 9, 5, 64)
    torch.testing.assert_close(out, expected.transpose(1, 2))


def test_ragged_rows_write_their_columns_and_attend_as_the_padded_batch():
    """A flattened forward's rows (``RaggedRows``) land in their prompts' cache rows and
    columns, and their attention equals that of the padded (prompt, query) batch."""
    from llmrl_cli.engine.cpu_kernels import ragged_attention
    from llmrl_cli.engine.reserved_cache import RaggedRows, ReservedLayer

    torch.manual_seed(0)
    layer = ReservedLayer((3, 2, 6, 8), room=4, dtype=torch.float32, device=torch.device("cpu"))
    layer.keys.normal_()
    layer.values.normal_()
    # prompt 0 gets two new rows, prompt 1 none, prompt 2 one: at columns 6, 7 and 6
    rows, slots = torch.tensor([0, 0, 2]), torch.tensor([0, 1, 0])
    ragged = RaggedRows(rows, slots, columns=6 + slots, queries=2, length=8)
    new_keys, new_values = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    keys, values = layer.update(new_keys, new_values, kwargs={"ragged": ragged})
    assert keys.shape == (3, 2, 8, 8)
    for i, (row, column) in enumerate([(0, 6), (0, 7), (2, 6)]):
        assert torch.equal(keys[row, :, column], new_keys[0, :, i])
        assert torch.equal(values[row, :, column], new_values[0, :, i])
    mask = torch.ones(3, 1, 2, 8, dtype=torch.bool)
    mask[0, :, 0, 7] = False  # the first new row of prompt 0 does not see the second
    mask[2, :, :, 7] = False
    # a flattened cache refuses an update without its rows (a model that drops the keyword)
    layer.flattened = True
    with pytest.raises(RuntimeError, match="prior_cpu_kernels: false"):
        layer.update(new_keys, new_values)
    query = torch.randn(1, 4, 3, 8)  # 4 query heads on 2 key/value heads
    out = ragged_attention(query, keys, values, mask, ragged, scaling=0.3)
    padded = torch.zeros(3, 4, 2, 8)
    padded[rows, :, slots] = query[0].transpose(0, 1)
    expected = F.scaled_dot_product_attention(
        padded, keys.repeat_interleave(2, dim=1), values.repeat_interleave(2, dim=1),
        attn_mask=mask, scale=0.3)[rows, :, slots]
    assert out.shape == (1, 3, 4, 8)
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-6)


def test_prefill_attention_is_causal_on_each_prompts_row():
    """A flattened prefill's new tokens attend to their prompt's cached prefix and to the new
    tokens up to their own, as a causal mask over the prompt would have them."""
    from llmrl_cli.engine.cpu_kernels import prefill_attention
    from llmrl_cli.engine.reserved_cache import RaggedRows

    torch.manual_seed(0)
    width = 9
    key, value = torch.randn(3, 2, width, 8), torch.randn(3, 2, width, 8)
    # row 0: a 7-token prompt, its last 4 new; row 2: 5 tokens, all new; row 1 not in the wave
    spans = [(0, 0, 4, 7), (2, 4, 5, 5)]
    query = torch.randn(1, 4, 9, 8)
    rows = torch.tensor([0] * 4 + [2] * 5)
    ragged = RaggedRows(rows, torch.tensor([*range(4), *range(5)]),
                        torch.tensor([*range(5, 9), *range(4, 9)]), 5, width, spans)
    out = prefill_attention(query, key, value, ragged, scaling=0.3)
    assert out.shape == (1, 9, 4, 8)
    for row, start, new, length in spans:
        k = key[row, :, width - length:].repeat_interleave(2, dim=0)
        v = value[row, :, width - length:].repeat_interleave(2, dim=0)
        causal = torch.ones(new, length, dtype=torch.bool).tril(diagonal=length - new)
        expected = F.scaled_dot_product_attention(query[0, :, start:start + new], k, v,
                                                  attn_mask=causal, scale=0.3)
        torch.testing.assert_close(out[0, start:start + new], expected.transpose(0, 1),
                                   rtol=1e-5, atol=1e-6)


def _tiny_llama(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).to(dtype).eval()


def test_sped_up_model_gives_the_same_logits_with_and_without_a_mask():
    lm = _tiny_llama()
    ids = torch.randint(0, 300, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0  # left padding: the attention runs under a mask
    with torch.inference_mode():
        before = lm(input_ids=ids, attention_mask=mask).logits
        assert speed_up_cpu_model(lm)
        after = lm(input_ids=ids, attention_mask=mask).logits
        unmasked = lm(input_ids=ids[1:]).logits
    assert not any(isinstance(m, nn.Linear) for m in lm.modules())
    # per layer: q/k/v as one, o, gate/up as one, down; and the lm_head
    assert sum(isinstance(m, PackedLinear) for m in lm.modules()) == 2 * 4 + 1
    assert lm.config._attn_implementation == "llmrl_sdpa_gqa"
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unmasked, before[1:], rtol=1e-4, atol=1e-4)


def test_bf16_model_is_left_alone():
    lm = _tiny_llama(torch.bfloat16)
    assert not speed_up_cpu_model(lm)
    assert sum(isinstance(m, nn.Linear) for m in lm.modules()) == 2 * 7 + 1
    assert lm.config._attn_implementation == "sdpa"


def test_onednn_caches_stay_bounded_over_many_row_counts():
    """Unbounded (oneDNN's default 1,024 entries), 200 row counts grew this layer by ~400 MB."""
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "32"  # set by `import llmrl_cli`
    layer = PackedLinear(nn.Linear(576, 1536, bias=False))
    with torch.inference_mode():
        for rows in range(1, 21):  # warm: allocator arenas, the first cache entries
            layer(torch.randn(rows, 576))
        start = _rss_mb()
        for rows in range(21, 221):
            layer(torch.randn(rows, 576))
    assert _rss_mb() - start < 120


def test_embedded_prior_samples_the_same_texts_with_and_without_the_kernels():
    from llmrl_cli.bench import ReferencePrior
    from llmrl_cli.priors.local import LocalLLMPrior

    prompts = ["Frozen Lake. You are at (0, 0); the goal is at (3, 3). Action:",
               "You are in the kitchen. There is a tomato on the counter. Action:"]
    fast = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6)
    plain = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6, cpu_kernels=False)
    jobs = [(prompt, 0) for prompt in prompts]
    assert fast._generate(jobs, 5) == plain._generate(jobs, 5)
    assert any(isinstance(m, PackedLinear) for m in fast.engine._lm.modules())
    assert not any(isinstance(m, PackedLinear) for m in plain.engine._lm.modules())
    reference = ReferencePrior(seed=0, cache=None)  # the bench's paper-code pattern: plain
    reference.engine.load()
    assert not any(isinstance(m, PackedLinear) for m in reference.engine._lm.modules())
    assert reference.engine._lm.config._attn_implementation == "sdpa"


def test_packing_the_embedded_model_hands_the_plain_weights_back():
    """The packed copies replace the plain weights (+ one for the tied lm_head, ~113 MB);
    without ``release_freed_memory`` RSS stayed ~500 MB higher."""
    from llmrl_cli.engine import EMBEDDED_MODEL, load_causal_lm

    _, lm = load_causal_lm(EMBEDDED_MODEL, torch.device("cpu"))
    before = _rss_mb()
    assert speed_up_cpu_model(lm)
    assert _rss_mb() - before < 250
