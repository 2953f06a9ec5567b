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
