"""The prefix KV cache: radix-tree bookkeeping, and exact reuse with the embedded SmolLM2."""

import pytest
import torch

from llmrl_cli.priors.local import LocalLLMPrior
from llmrl_cli.engine.prefix_cache import PrefixKVCache
from llmrl_cli.priors.probe import probe_states


def _kv(ids, layers=2):
    """Keys/values whose entries name their token: [layers, 1 head, len(ids), 1]."""
    keys = torch.tensor(ids, dtype=torch.float32).repeat(layers, 1, 1)[..., None]
    return keys, -keys


def test_match_returns_the_longest_cached_prefix_and_its_values():
    cache = PrefixKVCache(max_bytes=10**6)
    assert cache.match([1, 2, 3]) == (0, None, None)
    cache.insert([1, 2, 3, 4], *_kv([1, 2, 3, 4]))
    cache.insert([1, 2, 7], *_kv([1, 2, 7]))  # splits the first segment after [1, 2]
    assert len(cache) == 5  # [1, 2] + [3, 4] + [7]
    for ids, expected in [([1, 2, 3, 9], [1, 2, 3]), ([1, 2, 7, 8], [1, 2, 7]),
                          ([1, 2, 3, 4, 5], [1, 2, 3, 4]), ([5, 1], [])]:
        assert cache.matched_length(ids) == len(expected)  # the length alone, nothing copied
        m, keys, values = cache.match(ids)
        assert m == len(expected)
        if expected:
            assert keys[0, 0, :, 0].tolist() == expected and values.neg().equal(keys)


def test_the_least_recently_used_leaves_go_first_and_the_budget_holds():
    per_token = 2 * 2 * 4  # keys + values, 2 layers, float32
    cache = PrefixKVCache(max_bytes=6 * per_token)
    cache.insert([1, 2, 3], *_kv([1, 2, 3]))
    cache.insert([4, 5, 6], *_kv([4, 5, 6]))
    cache.match([1, 2, 3])  # [1, 2, 3] is now the more recent
    cache.insert([7, 8], *_kv([7, 8]))  # over budget: [4, 5, 6] goes
    assert cache.nbytes <= 6 * per_token
    assert cache.match([4, 5, 6])[0] == 0 and cache.match([1, 2, 3])[0] == 3
    assert cache.match([7, 8])[0] == 2
    off = PrefixKVCache(max_bytes=0)
    off.insert([1], *_kv([1]))
    assert len(off) == 0


@pytest.fixture(scope="module")
def priors():
    plain = LocalLLMPrior(seed=0, cache=None, max_new_tokens=4, prefix_cache_mb=0)
    reusing = LocalLLMPrior(seed=0, cache=None, max_new_tokens=4, prefix_cache_mb=64)
    plain.engine.load()
    reusing.engine.load()
    return plain, reusing


def test_reused_prefixes_give_the_logits_and_keys_of_a_full_prefill(priors):
    plain, reusing = priors
    assert plain.engine._prefix is None and reusing.engine._prefix is not None
    prompts = [q.prompt for q in probe_states("frozenlake", 4, seed=0)]
    reusing.engine._prefill(prompts[:2])  # warm the cache with two of them
    before = reusing.stats.reused_tokens
    logits, cache, mask, position = reusing.engine._prefill(prompts)
    assert reusing.stats.reused_tokens > before  # the other two reuse shared prefixes
    ref_logits, ref_cache, ref_mask, ref_position = plain.engine._prefill(prompts)
    assert torch.equal(mask, ref_mask) and torch.equal(position, ref_position)
    assert torch.allclose(logits, ref_logits, atol=1e-3, rtol=1e-4)
    keep = mask.bool()
    for layer, ref_layer in zip(cache.layers, ref_cache.layers):
        for ours, ref in ((layer.keys, ref_layer.keys), (layer.values, ref_layer.values)):
            assert torch.allclose(ours.permute(0, 2, 1, 3)[keep], ref.permute(0, 2, 1, 3)[keep],
                                  atol=1e-3, rtol=1e-4)


def test_score_mode_is_the_same_with_and_without_prefix_reuse(priors):
    plain, reusing = priors
    states = probe_states("frozenlake", 3, seed=1)
    prompts, cands = [q.prompt for q in states], [list(q.actions) for q in states]
    reusing._score(prompts, cands)
    again = reusing._score(prompts, cands)  # every prompt now fully cached
    for ours, ref in zip(again, plain._score(prompts, cands)):
        assert ours == pytest.approx(ref, abs=1e-3)
