"""`llmrl dataset import-paper`: the paper's Salad pickle, read without loading any class."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from llmrl_cli.cli import main
from llmrl_cli.data.dataset import load_dataset
from llmrl_cli.data.paper_dataset import import_paper, paper_dataset_path, paper_rows, safe_load
from llmrl_cli.errors import UserError
from tests.conftest import FIXTURES

CLONE = Path("/tmp/paper")
PICKLE = CLONE / "value-based" / "overcooked_data" / "raw_lettuce_data_bala752000.pkl"
JSONL = FIXTURES / "overcooked_lettuce_tomato_paper_dataset.jsonl"
INSTRUCTION = "Your task is to serve the dish of a bowl only containing chopped tomato and lettuce."


def _record(obs, action, next_obs, reward, done):
    """A record shaped like the paper's: (instruction, s, a, s', r, done, A(s), A(s'))."""
    return (INSTRUCTION, obs, action, next_obs, reward, done, ["a", "b"], ["a", "b"])


def _records(reward=float, done=bool):
    """Two episodes: s0 -> s1 -> s2 (delivered) and t0 (a fresh start, cut short)."""
    return [_record("s0", "a", "s1", reward(-0.002), done(False)),
            _record("s1", "b", "s2", reward(1.0), done(True)),
            _record("t0", "a", "t1", reward(-0.002), done(False))]


def _clone(tmp_path, records, protocol=pickle.DEFAULT_PROTOCOL) -> Path:
    """A folder laid out as a clone of the paper's repository, holding ``records``."""
    folder = tmp_path / "RL-LLM-Prior" / "value-based" / "overcooked_data"
    folder.mkdir(parents=True)
    (folder / "raw_lettuce_data_test.pkl").write_bytes(pickle.dumps(records, protocol=protocol))
    return tmp_path / "RL-LLM-Prior"


def test_a_synthetic_clone_is_converted_into_episodes(tmp_path):
    written, data = import_paper(_clone(tmp_path, _records()))
    assert written == paper_dataset_path() == tmp_path / "llmrl-cache" / "datasets" / \
        "paper-overcooked-salad.jsonl"
    assert load_dataset(written) == data
    assert (data.env, data.instruction) == ("overcooked-salad", INSTRUCTION)
    assert [[(tr.episode, tr.t) for tr in ep] for ep in data.episodes()] == \
        [[(0, 0), (0, 1)], [(1, 0)]]
    assert data.successful_episodes() == 1 and data.transitions[1].reward == 1.0
    assert not list(written.parent.glob("*.tmp"))  # written through a temporary file


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_scalars_are_rebuilt_without_numpy(tmp_path, protocol):
    """np.float32 rewards and np.bool_ flags come back as Python floats and bools (protocol 2
    carries their bytes through _codecs.encode, protocol 4 as bytes)."""
    records = _records(reward=np.float32, done=np.bool_)
    rows = paper_rows(_clone(tmp_path, records, protocol))
    small = float(np.float32(-0.002))
    assert [r["reward"] for r in rows] == [small, 1.0, small]
    assert [r["done"] for r in rows] == [False, True, False]
    assert all(type(r["reward"]) is float and type(r["done"]) is bool for r in rows)


class _Exploit:
    """Unpickling this would run os.system: the unpickler must refuse it, not call it."""

    def __reduce__(self):
        import os

        return os.system, ("touch pwned",)


def test_a_pickle_naming_any_other_global_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps([_record("s0", "a", "s1", -0.002, _Exploit())]))
    with pytest.raises(UserError, match=r"the pickle refers to (os|posix)\.system; llmrl "
                       "loads no class or function from a pickle"):
        safe_load(bad)
    assert not (tmp_path / "pwned").exists()
    arrays = tmp_path / "arrays.pkl"
    arrays.write_bytes(pickle.dumps([np.zeros(3)]))
    with pytest.raises(UserError, match="refers to numpy"):
        safe_load(arrays)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"not a pickle", "is not a readable pickle"),
    (pickle.dumps({"a": 1}), "does not hold a list of transitions (it holds dict)"),
    (pickle.dumps([("only", "three", "fields")]), "record 0 is not (instruction, observation, "
     "action, next observation, reward, done, actions, next actions): not a tuple of 8 fields"),
    (pickle.dumps([_record("s0", "a", "s1", "high", False)]), "its reward is not a number"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "data.pkl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "import-paper", str(path)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert err.startswith("llmrl: error: ") and not paper_dataset_path().exists()


def test_a_folder_without_the_pickle_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["dataset", "import-paper", str(tmp_path)])
    assert exc.value.code == 2
    assert "no value-based/overcooked_data/*.pkl under" in capsys.readouterr().err


def test_the_cli_prints_where_and_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "salad.jsonl"
    main(["dataset", "import-paper", str(_clone(tmp_path, _records())), "--out", str(out)])
    assert capsys.readouterr().out.strip() == \
        f"wrote {out}: 3 transitions, 2 episodes (1 successful)"
    assert len(load_dataset(out)) == 3


@pytest.mark.skipif(not PICKLE.exists(), reason=f"the paper's clone is not at {CLONE} "
                    "(github.com/yanxue7/RL-LLM-Prior)")
@pytest.mark.skipif(not JSONL.exists(), reason=f"fixtures folder {FIXTURES} is absent")
def test_the_papers_pickle_converts_to_the_fixture_json_lines(tmp_path, capsys):
    main(["dataset", "import-paper", str(CLONE)])
    assert capsys.readouterr().out.strip() == (f"wrote {paper_dataset_path()}: 4329 transitions, "
                                               "133 episodes (100 successful)")
    data = load_dataset(paper_dataset_path())
    expected = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
    assert len(data) == len(expected) == 4329
    assert {data.instruction} == {row["instruction"] for row in expected}
    for tr, row in zip(data.transitions, expected):  # the dataset keeps the pickle's order
        assert (tr.obs_text, tr.action, tr.next_obs_text, tr.done) == \
            (row["obs_text"], row["action"], row["next_obs_text"], row["done"])
        assert (list(tr.actions), list(tr.next_actions)) == (row["actions"], row["next_actions"])
        assert tr.reward == pytest.approx(row["reward"], abs=1e-9)
    # and its episodes are those read from the JSON lines themselves
    assert data == load_dataset(JSONL, env="overcooked-salad")
