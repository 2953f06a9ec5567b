import multiprocessing as mp
import sqlite3

import pytest

from llmrl_cli.priors.cache import ProposalCache, _retry_locked, cache_key


def test_key_depends_on_every_part():
    base = dict(model="m", prompt="p", mode="sample", k=5, temperature=1.0, seed=0)
    keys = {cache_key(**base)}
    for part, value in [("model", "n"), ("prompt", "q"), ("k", 6), ("temperature", 0.8),
                        ("seed", 1), ("mode", "score")]:
        keys.add(cache_key(**{**base, part: value}))
    assert len(keys) == 7


def test_persists_across_instances_and_first_answer_wins(tmp_path):
    path = tmp_path / "p.sqlite"
    cache = ProposalCache(path)
    cache.put_many({"a": ["left", "up"]})
    cache.put_many({"a": ["changed"]})
    cache.close()
    again = ProposalCache(path)
    assert again.get_many(["a", "b"]) == {"a": ["left", "up"]}
    assert len(again) == 1


def _writer(path, start):
    cache = ProposalCache(path)
    for i in range(start, start + 200):
        cache.put_many({f"k{i}": [i]})
    cache.close()


def test_concurrent_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.sqlite"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 100, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ProposalCache(path)
    assert len(cache) == 400
    assert cache.get_many(["k0", "k399"]) == {"k0": [0], "k399": [399]}


def test_memory_only_cache(tmp_path):
    cache = ProposalCache(None)
    cache.put_many({"x": [1]})
    assert cache.get_many(["x"]) == {"x": [1]} and len(cache) == 1


def test_the_file_is_opened_on_first_use_only(tmp_path):
    path = tmp_path / "lazy.sqlite"
    cache = ProposalCache(path)
    assert not path.exists()  # a run whose prior never asks an LLM never touches the file
    assert cache.get_many([]) == {} and not path.exists()
    cache.put_many({"a": [1]})
    assert path.exists() and ProposalCache(path).get_many(["a"]) == {"a": [1]}


def test_locked_database_errors_are_retried_and_others_raised():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert _retry_locked(flaky) == "done" and len(calls) == 3

    def broken():
        raise sqlite3.OperationalError("no such table: proposals")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _retry_locked(broken)

    def always_locked():
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _retry_locked(always_locked, wait_s=0.05)


def test_the_memory_front_is_bounded_and_the_file_keeps_everything(tmp_path):
    cache = ProposalCache(tmp_path / "c.sqlite", memory_items=2)
    cache.put_many({"a": [1], "b": [2]})
    cache.get_many(["a"])  # a is now more recent than b
    cache.put_many({"c": [3]})
    assert list(cache._memory) == ["a", "c"]
    assert cache.get_many(["a", "b", "c"]) == {"a": [1], "b": [2], "c": [3]}  # b from the file
    assert len(cache._memory) == 2
