"""The embedded SmolLM2 prior, run for real (small batches to keep it quick)."""

import os

import pytest
import torch

from llmrl_cli.envs import make
from llmrl_cli.priors import PriorQuery, ProposalCache
from llmrl_cli.priors.base import UniformMixPrior, UniformPrior
from llmrl_cli.priors.local import LocalLLMPrior
from llmrl_cli.priors.prompts import build_prompt, build_query, history_line


#: a prompt whose samples all stop within two tokens ("9" and a newline), while a Frozen Lake
#: prompt's go on: the batch then drops its row
QUICK_STOP = "Count: 1\n2\n3\n4\n5\n6\n7\n8\n"


def _queries(n=2):
    env = make("frozenlake")
    obs, _ = env.reset(seed=0)
    out = []
    history = []
    for move in ["down", "down", "right"][:n]:
        out.append(build_query("frozenlake", env.instruction, obs["text"], obs["actions"],
                               history, env.optimal_actions()))
        history.append(history_line(obs["text"], move))
        obs, *_ = env.step(move)
    return out


def test_prompt_follows_the_paper_layout():
    env = make("frozenlake")
    obs, _ = env.reset(seed=0)
    prompt = build_prompt("frozenlake", env.instruction, obs["text"], obs["actions"],
                          [history_line("o2", "left"), history_line("o3", "down"),
                           history_line("o4", "right")])  # the runner keeps history_length
    lines = prompt.split("\n")
    assert lines[0] == env.instruction
    assert lines[1] == "History:"
    assert lines[2:5] == ["Observation: o2. Action: left.", "Observation: o3. Action: down.",
                          "Observation: o4. Action: right."]
    assert lines[5] == f"Current Observation: {obs['text']}"
    assert lines[6].endswith("admissible actions: ['left', 'down', 'right', 'up']. Action:")


@pytest.fixture(scope="module")
def smol():
    """The prior with ``stop_on_newline`` (ours): samples stop early, rows leave the batch."""
    prior = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6, stop_on_newline=True)
    prior.engine.load()
    return prior


def sample(prior, prompts, k, draws=None):
    """The prior's k completions of each prompt (draw block ``draws[i]``, default 0), cut as
    the prior cuts them."""
    return prior._generate(list(zip(prompts, draws or [0] * len(prompts))), k)


@pytest.fixture(scope="module")
def smol_paper(smol):
    """The prior as the paper samples: stops only at end-of-text, cut at <END>/<eos>."""
    prior = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6)
    prior.engine.load()
    return prior


def test_the_paper_stop_rule_ends_samples_only_at_end_of_text(smol, smol_paper):
    eos = smol_paper.engine._tokenizer.eos_token_id
    assert smol_paper.engine._stop_ids.tolist() == [eos]
    newline_ids = smol.engine._stop_ids.tolist()
    assert eos in newline_ids and len(newline_ids) > 1
    assert all("\n" in smol.engine._tokenizer.decode([i]) for i in newline_ids if i != eos)
    # the paper's sampler draws on past a newline: the same draws, a longer text
    prompts = [q.prompt for q in _queries(2)] + [QUICK_STOP]
    cut, paper = sample(smol, prompts, 4), sample(smol_paper, prompts, 4)
    assert any("\n" in text for row in paper for text in row)
    for row_cut, row_paper in zip(cut, paper):
        for a, b in zip(row_cut, row_paper):
            assert b.startswith(a) and "\n" not in a


def test_sample_mode_returns_k_admissible_proposals(smol):
    queries = _queries(2)
    proposals = smol.propose(queries, 5)
    assert [len(p) for p in proposals] == [5, 5]
    assert all(a in q.actions for q, p in zip(queries, proposals) for a in p)
    raw = smol.completions(queries, 5)
    assert all("\n" not in text for row in raw for text in row)  # stop_on_newline


def test_proposals_are_a_function_of_prompt_and_seed(smol, tmp_path):
    queries = _queries(1)
    first = smol.completions(queries, 4)
    assert smol.completions(queries, 4) == first
    other_seed = LocalLLMPrior(seed=1, cache=None, max_new_tokens=6, stop_on_newline=True)
    other_seed.engine._tokenizer, other_seed.engine._lm, other_seed.engine._stop_ids = (
        smol.engine._tokenizer, smol.engine._lm, smol.engine._stop_ids)
    assert other_seed.completions(queries, 4) != first


def test_cache_answers_repeated_prompts_without_the_model(smol, tmp_path):
    smol.cache = ProposalCache(tmp_path / "p.sqlite")
    smol.stats.__init__()
    queries = _queries(2)
    first = smol.propose(queries, 3)
    assert (smol.stats.model_queries, smol.stats.cache_hits) == (2, 0)
    assert smol.propose(queries, 3) == first
    assert (smol.stats.model_queries, smol.stats.cache_hits, smol.stats.queries) == (2, 2, 4)
    # a new process reading the same file answers from it too
    fresh = LocalLLMPrior(seed=0, cache=ProposalCache(tmp_path / "p.sqlite"), max_new_tokens=6,
                          stop_on_newline=True)
    assert fresh.propose(queries, 3) == first and fresh.engine._lm is None
    smol.cache = None


def assert_samples_equal_a_plain_token_by_token_decode(prior, k=4, draws=None):
    """Each of ``prior``'s k completions, drawn again one token at a time by a full forward of
    prompt + tokens so far, with the same uniform draws (block b: draws b*k .. b*k + k - 1)."""
    from llmrl_cli.priors.llm import cut_completion
    from llmrl_cli.seeding import stable_seed

    prompts = [q.prompt for q in _queries(3)]
    prompts.insert(1, QUICK_STOP)  # its row leaves the batch early; the rows after it move up
    draws = draws or [0] * len(prompts)
    completions = sample(prior, prompts, k, draws)
    tok, lm = prior.engine._tokenizer, prior.engine._lm
    for prompt, block, row in zip(prompts, draws, completions):
        prompt_ids = tok(prior.engine._format(prompt), add_special_tokens=False)["input_ids"]
        for j, text in enumerate(row):
            uniforms = torch.rand(prior.max_new_tokens, generator=torch.Generator().manual_seed(
                stable_seed(prior.seed, prompt, block * k + j)))
            drawn = []
            for u in uniforms:
                with torch.no_grad():
                    ids = torch.tensor([prompt_ids + drawn], device=lm.device)
                    logits = lm(ids).logits[:, -1].float()
                drawn.append(int(prior.engine._draw(logits, u[None].to(lm.device))))
                if drawn[-1] in prior.engine._stop_ids.tolist():
                    break
            expected = cut_completion(tok.decode(drawn, skip_special_tokens=True),
                                      prior.stop_on_newline)
            assert text == expected


def test_sampled_completions_equal_a_plain_token_by_token_decode(smol):
    """Shared prefixes, early exits and in-place keys/values change the cost, not the draws."""
    assert_samples_equal_a_plain_token_by_token_decode(smol)


def test_a_later_draw_block_reads_later_draws_of_the_prompts_sequence(smol_paper):
    """Fresh draws: visit n of a prompt reads draws n*k .. n*k + k - 1 (paper stop rule)."""
    assert_samples_equal_a_plain_token_by_token_decode(smol_paper, draws=[2, 0, 1, 3])


def test_without_the_prefix_cache_the_padded_prefill_feeds_the_flattened_decode():
    """prefix_cache_mb = 0: the prompts prefill as one padded batch, then decode flattened."""
    prior = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6, prefix_cache_mb=0)
    prior.engine.load()
    assert prior.engine._prefix is None and prior.engine._ragged
    assert_samples_equal_a_plain_token_by_token_decode(prior)


def test_decode_batches_keep_the_keys_and_values_under_the_budget(smol):
    import math

    assert smol.engine.kv_bytes_per_token() == 2 * 30 * 3 * 64 * 4  # SmolLM2-135M: 30 layers, fp32
    prompts = [q.prompt for q in _queries(3)]
    k, saved = 5, smol.max_batch_kv_mb
    # a prompt's keys/values once, then room for its k answers
    widths = [len(smol.engine._tokenizer(smol.engine._format(p), add_special_tokens=False)["input_ids"])
              + k * (smol.max_new_tokens - 1) for p in prompts]
    two = 2 * max(widths[:2]) * smol.engine.kv_bytes_per_token()
    try:
        smol.max_batch_kv_mb = math.ceil(two / 2**20)
        assert 3 * max(widths) * smol.engine.kv_bytes_per_token() > smol.max_batch_kv_mb * 2**20
        assert smol.engine.decode_batches(prompts, k) == [prompts[:2], prompts[2:]]
        smol.max_batch_kv_mb = 1  # less than one prompt needs: each goes alone
        assert smol.engine.decode_batches(prompts, k) == [[p] for p in prompts]
        smol.max_batch_kv_mb = 10**6
        assert smol.engine.decode_batches(prompts, k) == [prompts]
    finally:
        smol.max_batch_kv_mb = saved


@pytest.mark.parametrize("ragged", [True, False])
def test_samples_decode_on_their_prompts_one_row_of_keys_and_values(smol, monkeypatch, ragged):
    """The k samples of a prompt are queries on its row, not k copies of its keys/values.
    Flattened (``ragged``, the CPU kernels' path), a step's forward holds the live nodes only;
    padded, each prompt gets the widest prompt's number of queries."""
    assert smol.engine._ragged  # fp32 on CPU: the kernels are in
    monkeypatch.setattr(smol.engine, "_ragged", ragged)
    prompts, k = [QUICK_STOP] + [q.prompt for q in _queries(3)], 5
    steps = []
    forward, flat_forward = smol.engine._lm.forward, smol.engine._forward_flat

    def spy(*args, **kwargs):
        if "logits_to_keep" not in kwargs:  # a decode step (prefills keep the last logits)
            steps.append((kwargs["input_ids"].shape, kwargs["attention_mask"].shape,
                          kwargs["past_key_values"].layers[0].keys.shape[0], kwargs.get("ragged")))
        return forward(*args, **kwargs)

    def spy_flat(tokens, positions, cache, rows, mask=None, keep=None):
        if mask is not None:  # a decode step
            steps.append(((1, len(tokens)), mask.shape, cache.layers[0].keys.shape[0], rows))
        return flat_forward(tokens, positions, cache, rows, mask, keep)

    monkeypatch.setattr(smol.engine._lm, "forward", spy)
    monkeypatch.setattr(smol.engine, "_forward_flat", spy_flat)
    sample(smol, prompts, k)
    assert steps
    for ids, (batch, _, queries, _), rows, flat in steps:
        assert rows == batch <= len(prompts) and 1 <= queries <= k
        if ragged:  # one row per live node, each prompt with at least one
            assert ids[0] == 1 and batch <= ids[1] <= batch * queries
            assert flat.rows.unique().tolist() == list(range(batch)) and flat.queries == queries
        else:
            assert tuple(ids) == (batch, queries) and flat is None
    # a prompt whose samples have all stopped leaves the batch; the batch never grows again
    batches = [mask[0] for _, mask, _, _ in steps]
    assert batches == sorted(batches, reverse=True) and batches[-1] < len(prompts), batches


def _flat_and_transformers(prior, prompts, k=5):
    """(prefill logits, samples) with ``cpu_kernels.flat_forward`` and with transformers'
    forward running the flattened rows, each from an empty prefix cache."""
    from llmrl_cli.engine.prefix_cache import PrefixKVCache

    out = {}
    for flat in (True, False):
        prior.engine._flat = flat
        prior.engine._prefix = PrefixKVCache(prior.prefix_cache_mb * 2**20)
        with torch.inference_mode():
            logits = prior.engine._prefill(prompts, room=2)[0]
        out[flat] = (logits, sample(prior, prompts, k))
    prior.engine._flat = True
    return out[True], out[False]


def test_the_flat_forward_computes_what_the_transformers_forward_does(smol):
    """The embedded model's layers, run one by one on its own modules, give transformers'
    numbers (bit for bit on this CPU) and so the same samples, over prefills that reuse cached
    prefixes and decode steps under the tree mask."""
    assert smol.engine._flat
    prompts = [QUICK_STOP] + [q.prompt for q in _queries(3)]
    (logits, samples), (logits2, samples2) = _flat_and_transformers(smol, prompts)
    torch.testing.assert_close(logits, logits2, rtol=1e-6, atol=1e-5)
    assert samples == samples2


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_the_flat_forward_runs_llama_and_qwen2_layouts(tmp_path, model_type):
    """A small random model of each layout ``flat_forward`` runs (qwen2: biased q/k/v, 4 query
    heads per key/value head) gives transformers' logits and samples; one with another MLP
    activation keeps transformers' forward."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmrl_cli.engine import EMBEDDED_MODEL, load_causal_lm

    tok, _ = load_causal_lm(EMBEDDED_MODEL, torch.device("cpu"))
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=64,
                                  intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=8, num_key_value_heads=2,
                                  max_position_embeddings=1024, tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    prior = LocalLLMPrior(model=str(tmp_path / "lm"), seed=0, cache=None, max_new_tokens=6)
    prior.engine.load()
    assert prior.engine._flat
    if model_type == "qwen2":
        assert prior.engine._lm.model.layers[0].self_attn.qkv_proj.bias is not None  # q/k/v biases
    prompts = [QUICK_STOP] + [q.prompt for q in _queries(2)]
    (logits, samples), (logits2, samples2) = _flat_and_transformers(prior, prompts)
    torch.testing.assert_close(logits, logits2, rtol=1e-5, atol=1e-5)
    assert samples == samples2 and len(samples) == 3
    config.hidden_act = "gelu"
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "gelu")
    tok.save_pretrained(tmp_path / "gelu")
    other = LocalLLMPrior(model=str(tmp_path / "gelu"), seed=0, cache=None, max_new_tokens=6)
    other.engine.load()
    assert other.engine._ragged and not other.engine._flat
    assert len(sample(other, prompts, 2)) == 3


def test_a_transformers_that_drops_the_flattened_rows_falls_back_with_a_notice(
        tmp_path, monkeypatch, capsys):
    """transformers before 5.24 calls the cache update without the forward's keywords
    (``update(key_states, value_states, layer_idx)``); a model ``flat_forward`` cannot run
    then prefills and decodes unflattened, with one notice, and samples what the flattened
    forwards sample."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmrl_cli.engine import EMBEDDED_MODEL, load_causal_lm
    from llmrl_cli.engine.reserved_cache import ReservedLayer

    tok, _ = load_causal_lm(EMBEDDED_MODEL, torch.device("cpu"))
    config = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=64,
                                  intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=8, num_key_value_heads=2,
                                  max_position_embeddings=1024, hidden_act="gelu")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    prompts = [QUICK_STOP] + [q.prompt for q in _queries(2)]
    flattened = LocalLLMPrior(model=str(tmp_path / "lm"), seed=0, cache=None, max_new_tokens=6)
    flattened.engine.load()
    assert flattened.engine._ragged and not flattened.engine._flat
    assert "llmrl:" not in capsys.readouterr().err
    expected = sample(flattened, prompts, 3)

    update = ReservedLayer.update
    monkeypatch.setattr(ReservedLayer, "update",
                        lambda self, key, value, *args, **kwargs: update(self, key, value, *args))
    prior = LocalLLMPrior(model=str(tmp_path / "lm"), seed=0, cache=None, max_new_tokens=6)
    prior.engine.load()
    assert not prior.engine._ragged
    notice = [line for line in capsys.readouterr().err.splitlines() if "llmrl:" in line]
    assert len(notice) == 1 and "runs its forwards unflattened" in notice[0]
    assert sample(prior, prompts, 3) == expected


def test_flattened_prefill_equals_one_prompt_at_a_time(smol):
    """The prompts' uncached tokens in one forward give the logits and keys/values that one
    forward per prompt gives, reusing the same cached prefixes."""
    from llmrl_cli.engine.prefix_cache import PrefixKVCache

    queries = _queries(3)
    prompts = [queries[2].prompt, QUICK_STOP, queries[1].prompt]
    results = []
    for ragged in (False, True):
        smol.engine._ragged = ragged
        smol.engine._prefix = PrefixKVCache(smol.prefix_cache_mb * 2**20)
        smol.engine._prefill([queries[0].prompt], room=2)  # a prefix the others partly share
        before = smol.stats.reused_tokens
        with torch.inference_mode():
            logits, cache, mask, position = smol.engine._prefill(prompts, room=2)
        results.append((logits, cache, mask, position, smol.stats.reused_tokens - before))
    smol.engine._ragged = True
    (logits, cache, mask, position, reused), (logits2, cache2, mask2, position2, reused2) = results
    assert reused == reused2 > 0
    assert torch.equal(mask, mask2) and torch.equal(position, position2)
    torch.testing.assert_close(logits2, logits, rtol=1e-4, atol=2e-4)
    for layer, layer2 in zip(cache.layers, cache2.layers):
        assert layer2.keys.shape == layer.keys.shape
        seen = mask.bool()[:, None, :, None].expand_as(layer.keys)
        torch.testing.assert_close(layer2.keys[seen], layer.keys[seen], rtol=1e-4, atol=2e-4)
        torch.testing.assert_close(layer2.values[seen], layer.values[seen], rtol=1e-4, atol=2e-4)


def assert_scores_equal_a_plain_forward_of_prompt_and_action(prior):
    queries = _queries(2)
    odd = ["left", "go north now"]  # a multi-token candidate exercises the cached positions
    scores = prior._score([q.prompt for q in queries], [list(queries[0].actions), odd])
    tok, lm = prior.engine._tokenizer, prior.engine._lm
    for q, cands, row in zip(queries, [queries[0].actions, odd], scores):
        prompt_ids = tok(q.prompt, add_special_tokens=False)["input_ids"]
        for cand, value in zip(cands, row):
            ids = prior.candidate_ids(cand)
            with torch.no_grad():
                logits = lm(torch.tensor([prompt_ids + ids], device=lm.device)).logits
                logp = torch.log_softmax(logits.float(), -1)
            expected = sum(float(logp[0, len(prompt_ids) - 1 + j, t]) for j, t in enumerate(ids))
            assert value == pytest.approx(expected, abs=2e-3)


def test_score_mode_equals_a_plain_forward_of_prompt_and_action(smol):
    assert_scores_equal_a_plain_forward_of_prompt_and_action(smol)


def test_score_mode_distribution_proposals_and_cache(smol, tmp_path):
    scorer = LocalLLMPrior(seed=0, mode="score", cache=ProposalCache(tmp_path / "s.sqlite"))
    scorer.engine._tokenizer, scorer.engine._lm = smol.engine._tokenizer, smol.engine._lm
    queries = _queries(2)
    probs = scorer.distribution(queries, 5)
    assert all(len(p) == 4 and sum(p) == pytest.approx(1.0) for p in probs)
    proposals = scorer.propose(queries, 5)
    assert [len(p) for p in proposals] == [5, 5]
    assert all(a in q.actions for q, p in zip(queries, proposals) for a in p)
    assert scorer.stats.model_queries == 2 and scorer.stats.tokens > 0
    # scores do not depend on the seed: another seed reads them from the shared cache
    other = LocalLLMPrior(seed=7, mode="score", cache=ProposalCache(tmp_path / "s.sqlite"))
    assert other.distribution(queries, 5) == probs and other.engine._lm is None
    # debiased: the mean of the distributions under the 4 rotations of the action list
    debiased = LocalLLMPrior(seed=0, mode="score", permutations=4, cache=scorer.cache)
    debiased.engine._tokenizer, debiased.engine._lm = smol.engine._tokenizer, smol.engine._lm
    mean = debiased.distribution(queries[:1], 5)[0]
    q = queries[0]
    per_order = []
    for shift in range(4):
        order = q.actions[shift:] + q.actions[:shift]
        logps = smol._score([q.prompt_for(order)], [list(q.actions)])[0]
        per_order.append(torch_softmax(logps))
    assert mean == pytest.approx([sum(p[i] for p in per_order) / 4 for i in range(4)], abs=1e-4)


def torch_softmax(values):
    import torch

    return torch.softmax(torch.tensor(values), 0).tolist()


def test_uniform_prior_and_uniform_mix():
    queries = _queries(2)
    assert UniformPrior().propose(queries, 5) == [list(q.actions) for q in queries]

    class Always(UniformPrior):
        def propose(self, queries, k):
            return [["up"] * k for _ in queries]

    many = [PriorQuery(f"prompt {i}", ("left", "down", "right", "up")) for i in range(200)]
    full = UniformMixPrior(seed=0, base=Always(), eps=1.0).propose(many, 5)
    share_up = sum(a == "up" for row in full for a in row) / (len(full) * 5)
    assert 0.2 < share_up < 0.3  # uniform over 4 actions: 1/4
    # deterministic per prompt: the same state always gets the same smoothed proposals
    assert UniformMixPrior(seed=0, base=Always(), eps=0.5).propose(many[:3], 5) == \
        UniformMixPrior(seed=0, base=Always(), eps=0.5).propose(many[:3], 5)
    none = UniformMixPrior(seed=0, base=Always(), eps=0.0).propose(queries, 5)
    assert none == [["up"] * 5] * 2


def test_reserved_cache_copies_the_chosen_rows_and_lets_go_of_the_source():
    from transformers import DynamicCache

    from llmrl_cli.engine.reserved_cache import first_moved, reserved_cache

    source = DynamicCache()
    keys = [torch.arange(3 * 2 * 4 * 5, dtype=torch.float32).view(3, 2, 4, 5) + 1000 * i
            for i in range(2)]
    for layer, k in enumerate(keys):
        source.update(k, -k, layer)
    index = torch.tensor([2, 0, 0])
    copy = reserved_cache(source, index, room=3)
    for layer, k in enumerate(keys):
        assert torch.equal(copy.layers[layer].keys, k[index])
        assert torch.equal(copy.layers[layer].values, -k[index])
    # the source's layers are released one by one (never two full caches at once)
    assert source.layers == [None, None]
    # a decoded position is written in place, within the reserved room
    buffer = copy.layers[0]._keys
    new = torch.ones(3, 2, 1, 5)
    out_keys, _ = copy.layers[0].update(new, new)
    assert copy.layers[0]._keys is buffer and out_keys.shape == (3, 2, 5, 5)
    assert torch.equal(out_keys[:, :, 4:], new) and torch.equal(out_keys[:, :, :4], keys[0][index])
    # rows whose decoding is done leave the batch: the others move to the front, in place
    before = out_keys.clone()
    layer = copy.layers[0]
    rows = ([0, 1, 2], [0, 2], [1, 2], [])
    assert [first_moved(torch.tensor(i, dtype=torch.long)) for i in rows] == [3, 1, 0, 0]
    layer.keep_rows(torch.tensor([0, 2]))
    assert layer._keys is buffer and layer.keys.shape == (2, 2, 5, 5)
    assert torch.equal(layer.keys, before[[0, 2]])
    assert torch.equal(layer.values[1, :, :4], -keys[0][0])
    out_keys, _ = layer.update(2 * new[:2], 2 * new[:2])
    assert out_keys.shape == (2, 2, 6, 5) and torch.equal(out_keys[:, :, :5], before[[0, 2]])
    assert torch.equal(out_keys[:, :, 5:], 2 * new[:2])


def test_the_prior_runs_fp32_on_cpu_unless_bf16_is_asked_for():
    """bf16 on a CPU is opt-in: oneDNN's bf16 kernels keep memory per matrix shape."""
    from llmrl_cli.config import build_config
    from llmrl_cli.devices import resolve_dtype
    from llmrl_cli.errors import UserError
    from llmrl_cli.priors import make_prior

    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    cfg = build_config({"prior_dtype": "bfloat16"}, env="frozenlake", algo="dqn-prior",
                       prior="local")
    assert make_prior(cfg, "cpu").dtype == "bfloat16"
    assert make_prior(build_config(env="frozenlake", algo="dqn-prior", prior="local"),
                      "cpu").dtype == "auto"
    with pytest.raises(UserError, match="unknown prior_dtype 'fp8'"):
        build_config({"prior_dtype": "fp8"}, env="frozenlake", algo="dqn-prior")


# -- the CUDA path, on a GPU: `make test-cuda` (marked `cuda`; `make test` and CI, which have no
# GPU, leave these out). Without a CUDA device they fail, not skip.


def need_cuda():
    if not torch.cuda.is_available():
        pytest.fail("no CUDA device: the tests marked cuda need a GPU")


@pytest.fixture(scope="module")
def smol_fp32():
    need_cuda()
    prior = LocalLLMPrior(seed=0, cache=None, max_new_tokens=6, device="cuda", dtype="float32")
    prior.engine.load()
    return prior


@pytest.mark.cuda
def test_cuda_samples_equal_a_plain_token_by_token_decode(smol_fp32):
    """On CUDA the prompts prefill as one padded batch (no prefix cache); the tree decode
    on top must still draw what a plain decode draws (fp32, so the draws are comparable)."""
    assert smol_fp32.engine._prefix is None
    assert_samples_equal_a_plain_token_by_token_decode(smol_fp32)


@pytest.mark.cuda
def test_cuda_scores_equal_a_plain_forward(smol_fp32):
    assert_scores_equal_a_plain_forward_of_prompt_and_action(smol_fp32)


@pytest.mark.cuda
def test_cuda_prior_runs_bf16_by_default_and_proposes_admissible_actions():
    need_cuda()
    prior = LocalLLMPrior(seed=0, cache=None, device="cuda")
    prior.engine.load()
    assert prior.engine._lm.dtype == torch.bfloat16 and prior.engine._lm.device.type == "cuda"
    queries = _queries(3)
    proposals = prior.propose(queries, 5)
    assert all(len(p) == 5 and all(a in q.actions for a in p)
               for q, p in zip(queries, proposals))


@pytest.mark.cuda
def test_a_dqn_prior_run_trains_on_the_gpu(tmp_path):
    need_cuda()
    from llmrl_cli.config import build_config
    from llmrl_cli.runner import Runner

    cfg = build_config(env="frozenlake", algo="dqn-prior", episodes=4, num_envs=4,
                       device="cuda", out=str(tmp_path), experiment="cuda",
                       agent={"train_start": 0, "train_every": 4, "batch_size": 8, "eval_every": 4,
                              "eval_episodes": 4})
    runner = Runner(cfg, log=lambda msg: None)
    runner.run()
    assert runner.agent.grad_steps > 0
    assert next(runner.agent.q.parameters()).device.type == "cuda"
    assert runner.encoder.device.type == "cuda"
    assert runner.prior.engine._lm.device.type == "cuda" and runner.prior.engine._lm.dtype == torch.bfloat16
    rows = runner.csv_path.read_text().splitlines()
    assert len(rows) >= 3  # header, evaluations at 0 and 4


def test_probe_counts_each_unmatched_completion_once(smol):
    """``llmrl prior probe`` of a sample-mode prior: p(action) is the share of the k proposals
    it drew, and each completion that names no admissible action is counted once."""
    from llmrl_cli.priors.llm import mentions_any
    from llmrl_cli.priors.probe import probe_prior, probe_states

    queries = probe_states("frozenlake", 3, seed=0)
    texts = smol.completions(queries, 4)
    expected = sum(not mentions_any(t, list(q.actions)) for q, row in zip(queries, texts)
                   for t in row)
    assert expected > 0  # the 135M model's texts often name no action
    before = smol.stats.unmatched
    result = probe_prior("local:sample", smol, queries, 4, batch=2)
    assert result.unmatched == expected == smol.stats.unmatched - before
    for q, row, probs in zip(queries, result.proposals, result.probs):
        assert len(row) == 4
        assert probs == [row.count(a) / 4 for a in q.actions]


def test_a_user_gguf_is_converted_once_and_loads_with_its_own_numbers(tmp_path, monkeypatch):
    """A ``.gguf`` prior model is de-quantised into ``<cache>/models`` on first use, in fp32:
    later loads read that folder (no conversion) and give the logits of the file itself; a
    changed file converts again."""
    import shutil

    from transformers import AutoModelForCausalLM

    from llmrl_cli.engine import embedded_gguf, load_causal_lm, models, resolve_model_path

    monkeypatch.setenv("LLMRL_MODEL_DIR", str(tmp_path / "models"))
    gguf = tmp_path / "mine.gguf"
    shutil.copyfile(embedded_gguf(), gguf)
    folder = resolve_model_path(str(gguf))
    assert folder.parent == tmp_path / "models" and folder.name.startswith("mine-")
    monkeypatch.setattr(models, "export_gguf", lambda *a: pytest.fail("converted again"))
    assert resolve_model_path(str(gguf)) == folder
    tok, lm = load_causal_lm(str(gguf), torch.device("cpu"))
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name,
                                                  dtype=torch.float32).eval()
    ids = tok("Count: 1 2 3", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(lm(ids).logits, direct(ids).logits)
    os.utime(gguf, ns=(0, 0))
    assert models.converted_gguf_dir(gguf) != folder
