"""Offline datasets: the paper's Salad dataset as it is, and our own format round-trip."""

import json

import pytest

from llmrl_cli.data.dataset import Dataset, Transition, from_paper_rows, load_dataset
from llmrl_cli.errors import UserError
from tests.conftest import FIXTURES

PAPER = FIXTURES / "overcooked_lettuce_tomato_paper_dataset.jsonl"
needs_fixtures = pytest.mark.skipif(not PAPER.exists(),
                                    reason=f"fixtures folder {FIXTURES} is absent")


@needs_fixtures
def test_paper_dataset_is_read_with_its_133_episodes():
    data = load_dataset(PAPER, env="overcooked-salad")
    assert len(data) == 4329
    episodes = data.episodes()
    assert len(episodes) == 133 and data.successful_episodes() == 100
    assert data.instruction == ("Your task is to serve the dish of a bowl only containing "
                                "chopped tomato and lettuce.")
    for steps in episodes:  # each episode is a chain of transitions
        assert [tr.t for tr in steps] == list(range(len(steps)))
        for a, b in zip(steps, steps[1:]):
            assert a.next_obs_text == b.obs_text and not a.done
    first = data.transitions[0]
    assert first.action == "pick up the tomato" and first.reward == -0.00199
    assert first.actions[3] == "take the empty bowl" and len(first.actions) == 8


def test_round_trip_and_subset(tmp_path):
    trs = [Transition(e, t, f"s{e}{t}", ("a", "b"), "a", 0.5 * t, f"s{e}{t + 1}", ("a", "b"),
                      t == 2) for e in range(4) for t in range(3)]
    data = Dataset("frozenlake", "Reach the goal.", trs)
    path = data.save(tmp_path / "d.jsonl")
    again = load_dataset(path)
    assert again == data
    part = data.subset(7, seed=0)
    assert len(part) == 7 and len(part.episodes()) == 3  # two whole episodes and one cut
    assert part.transitions == data.subset(7, seed=0).transitions


def test_bad_dataset_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"obs_text": "o"}\n')
    with pytest.raises(UserError, match="row 1 has no instruction text \\(neither an "
                       "llmrl-dataset file nor the paper's JSON lines\\)"):
        load_dataset(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(UserError, match="line 1 is not JSON"):
        load_dataset(broken)


GOOD_ROW = {"episode": 0, "t": 0, "obs_text": "o", "actions": ["up", "down"], "action": "up",
            "reward": 0.0, "next_obs_text": "p", "next_actions": ["up"], "done": False}


@pytest.mark.parametrize("change, said", [
    ({"reward": "high"}, "line 3: reward must be a number, not 'high'"),
    ({"actions": "up"}, "line 3: actions must be a list of texts, not 'up'"),
    ({"done": "no"}, "line 3: done must be true or false, not 'no'"),
    ({"t": 1.5}, "line 3: t must be a whole number, not 1.5"),
    ({"action": "left"}, "line 3: the action 'left' is not among its admissible actions"),
    ({"obs_text": None}, "line 3: obs_text must be a text, not None"),
])
def test_a_bad_transition_is_one_line_naming_its_line(tmp_path, change, said):
    path = Dataset("frozenlake", "Reach the goal.").save(tmp_path / "d.jsonl")
    rows = [GOOD_ROW, {**GOOD_ROW, "t": 1, **change}]
    path.write_text(path.read_text() + "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError) as err:
        load_dataset(path)
    assert str(err.value) == f"dataset {str(path)!r} {said}"


def test_a_bad_paper_row_is_one_line_naming_its_row(tmp_path):
    row = {"instruction": "Cook.", "obs_text": "s0", "action": "a", "next_obs_text": "s1",
           "reward": 0.0, "done": False, "actions": ["a"], "next_actions": ["a"]}
    path = tmp_path / "paper.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "action": "b"}) + "\n")
    with pytest.raises(UserError) as err:
        load_dataset(path, "overcooked-salad")
    assert str(err.value) == (f"dataset {str(path)!r} row 2: the action 'b' is not among its "
                              "admissible actions")


def test_paper_rows_are_cut_into_episodes():
    """Where a transition is done, or the next one does not start where it ended."""
    def row(obs, nxt, done=False):
        return {"instruction": "Cook.", "obs_text": obs, "action": "a", "next_obs_text": nxt,
                "reward": 0.0, "done": done, "actions": ["a"], "next_actions": ["a"]}

    data = from_paper_rows([row("s0", "s1"), row("s1", "s2", True), row("s0", "s1"),
                            row("x0", "x1")], "overcooked-salad")
    assert (data.env, data.instruction) == ("overcooked-salad", "Cook.")
    assert [(tr.episode, tr.t) for tr in data.transitions] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert len(from_paper_rows([], "e")) == 0


def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "d.jsonl"
    good = Dataset("frozenlake", "Reach the goal.",
                   [Transition(0, 0, "s", ("a",), "a", 1.0, "s'", ("a",), True)])
    good.save(path)
    bad = Dataset("frozenlake", "Reach the goal.",
                  [Transition(0, 0, "s", ("a",), "a", object(), "s'", ("a",), True)])
    with pytest.raises(TypeError):
        bad.save(path)
    assert load_dataset(path) == good and [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]
