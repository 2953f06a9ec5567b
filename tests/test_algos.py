"""The algorithm registry: every entry is complete and the config resolver follows it."""

import dataclasses

import pytest

from llmrl_cli.algos import ALGORITHMS, algorithm, names
from llmrl_cli.config import build_config
from llmrl_cli.errors import UserError
from llmrl_cli.training.loop import Loop


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_algorithm_has_a_loop_settings_and_a_comparable_baseline(name):
    spec = algorithm(name)
    assert issubclass(spec.loop(), Loop)
    assert dataclasses.is_dataclass(spec.config)
    cfg = build_config(env="frozenlake", algo=name, episodes=1)
    assert type(cfg.agent) is spec.config
    assert cfg.prior == ("local" if spec.takes_prior else "uniform")
    if spec.baseline is not None:
        base = algorithm(spec.baseline)
        assert base.family == spec.family and base.baseline is None and not base.proposes


def test_families_and_loops():
    assert names("offline") == ("cql", "cql-prior")
    assert names("policy") == ("gflan", "gflan-prior")
    assert names("online", proposes=True) == ("dqn-prior", "llm")
    assert {algorithm(n).loop().__name__ for n in ALGORITHMS} == {
        "Runner", "OfflineRunner", "GFlanRunner"}
    assert [n for n, a in ALGORITHMS.items() if not a.learns] == ["llm"]


def test_an_unknown_algorithm_is_one_error_naming_the_known_ones():
    with pytest.raises(UserError) as err:
        build_config(env="frozenlake", algo="ppo")
    assert str(err.value) == ("unknown algo 'ppo'; choose one of: cql, cql-prior, dqn, "
                              "dqn-prior, gflan, gflan-prior, llm")
