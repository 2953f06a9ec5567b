"""`llmrl compare`: a rerun's run CSVs against recorded ones, costs left out."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from llmrl_cli.compare import compare_results

ROWS = pd.DataFrame({
    "env": ["frozenlake"] * 2, "algo": ["dqn"] * 2, "prior": ["uniform"] * 2, "seed": [0, 0],
    "episode": [0, 20], "env_steps": [0, 180], "eval_return": [0.0, 0.7],
    "eval_success": [0.0, 0.7], "loss": [float("nan"), 0.0123456789],
    "wall_s": [1.5, 30.2], "llm_calls": [0, 4], "llm_cache_hits": [0, 12],
})


def _results(folder: Path, rows: pd.DataFrame = ROWS) -> Path:
    run = folder / "frozenlake" / "frozenlake" / "dqn"
    run.mkdir(parents=True)
    rows.to_csv(run / "seed_0.csv", index=False)
    return folder


def _compare(ref: Path, new: Path):
    return subprocess.run([sys.executable, "-m", "llmrl_cli.cli", "compare", str(ref), str(new)],
                          capture_output=True, text=True)


def test_costs_differ_but_the_results_match(tmp_path):
    changed = ROWS.copy()
    changed["wall_s"] = [9.0, 99.0]  # another machine's times
    changed["llm_calls"] = [0, 0]  # a warm cache answered every query
    changed["llm_cache_hits"] = [0, 16]
    changed.loc[1, "loss"] = 0.0123456789 * (1 + 1e-9)  # float rounding
    assert compare_results(_results(tmp_path / "a"), _results(tmp_path / "b", changed)) == (1, [])


def test_a_changed_result_is_named_with_its_row_and_column(tmp_path):
    changed = ROWS.copy()
    changed.loc[1, "eval_success"] = 0.6
    ref, new = _results(tmp_path / "a"), _results(tmp_path / "b", changed)
    assert compare_results(ref, new) == (
        0, ["frozenlake/frozenlake/dqn/seed_0.csv: row 2, eval_success: 0.6, "
            "the reference has 0.7"])
    done = _compare(ref, new)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "differs: frozenlake/frozenlake/dqn/seed_0.csv: row 2, eval_success: 0.6, the reference "
        "has 0.7", "0 run file(s) match, 1 differ"]


def test_missing_extra_and_shorter_runs_are_named(tmp_path):
    ref = _results(tmp_path / "a")
    new = _results(tmp_path / "b", ROWS.iloc[:1])
    extra = new / "frozenlake" / "frozenlake" / "dqn-prior"
    extra.mkdir()
    ROWS.to_csv(extra / "seed_1.csv", index=False)
    runs = ref / "frozenlake" / "frozenlake" / "dqn"
    shutil.copy(runs / "seed_0.csv", runs / "seed_1.csv")
    matched, problems = compare_results(ref, new)
    assert matched == 0
    assert problems == [
        f"frozenlake/frozenlake/dqn/seed_1.csv: missing from {new}",
        "frozenlake/frozenlake/dqn-prior/seed_1.csv: not in the reference",
        "frozenlake/frozenlake/dqn/seed_0.csv: 1 rows, the reference has 2",
    ]


def test_a_folder_without_runs_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _compare(tmp_path / "empty", tmp_path / "empty")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"llmrl: error: {tmp_path / 'empty'} holds no run CSVs (seed_N.csv)")
