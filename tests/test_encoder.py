import torch

from llmrl_cli.envs.base import TextEnv


def test_pair_templates_follow_the_paper():
    q_input = TextEnv().q_input
    assert q_input("You see a cup.", "take cup") == "Observation: You see a cup.,  Action: take cup."
    assert (q_input("room", "go to desk 1", task="put a pen on the desk")
            == "put a pen on the desk,  Action: go to desk 1, for Observation: room,")


def test_encoder_is_batched_with_an_exact_cache(encoder):
    encoder.stats.__init__()
    texts = ["Observation: a, Action: left.", "Observation: a, Action: right.",
             "Observation: a, Action: left."]
    first = encoder.encode(texts)
    assert first.shape == (3, 384) and first.dtype == torch.float32
    assert torch.equal(first[0], first[2])
    assert (encoder.stats.texts, encoder.stats.encoded, encoder.stats.hits) == (3, 2, 1)
    again = encoder.encode(texts[:2])
    assert torch.equal(again, first[:2])
    assert (encoder.stats.texts, encoder.stats.encoded, encoder.stats.hits) == (5, 2, 3)


def test_cached_vectors_equal_fresh_ones(encoder):
    text = "Observation: the lake is frozen, Action: up."
    cached = encoder.encode([text])[0]
    fresh = encoder._run_model([text, "some other text that pads the batch"])[0]
    assert torch.allclose(cached, fresh, atol=1e-5)


def test_the_cache_keeps_the_most_recently_used_texts_and_their_exact_vectors():
    from llmrl_cli.encoders import TextEncoder

    small = TextEncoder(cache_size=3)
    texts = [f"Observation: room {i}, Action: go." for i in range(5)]
    first = small.encode(texts[:3])
    assert torch.allclose(first, small._run_model(texts[:3]), atol=1e-6)
    small.encode([texts[0]])  # 0 is now the most recently used: 1 goes first
    third = small.encode(texts[3:4] + texts[:1])[0]
    assert set(small._rows) == {texts[2], texts[3], texts[0]} and len(small._vectors) <= 1024
    encoded = small.stats.encoded
    again = small.encode([texts[2], texts[0], texts[2], texts[3]])
    assert small.stats.encoded == encoded  # all four from the cache, bit for bit
    assert torch.equal(again, torch.stack([first[2], first[0], first[2], third]))


def test_length_buckets_give_each_text_its_own_vector_in_order():
    from llmrl_cli.encoders import TextEncoder

    texts = ["Observation: a, Action: up.", "Observation: " + "a long room, " * 20 + "Action: up.",
             "Observation: b, Action: down."]
    plain = TextEncoder(batch_size=2)._run_model(texts)
    bucketed = TextEncoder(batch_size=2, bucket_by_length=True)._run_model(texts)
    assert torch.allclose(plain, bucketed, atol=1e-5)
    assert not torch.allclose(bucketed[0], bucketed[2], atol=1e-3)
