import math

import pandas as pd
import pytest

from llmrl_cli.report import ci95, load_results, t95, summary_table, write_report
from llmrl_cli.runner import CSV_COLUMNS


def _write(root, algo, seed, successes, returns, calls=0, hits=0, prior=None, experiment="exp"):
    rows = []
    for i, (s, r) in enumerate(zip(successes, returns)):
        row = dict.fromkeys(CSV_COLUMNS, 0)
        row.update(env="frozenlake", algo=algo, prior=prior or ("uniform" if algo == "dqn" else "local"),
                   k=5, seed=seed, episode=10 * i, env_steps=100 * i + seed, eval_success=s,
                   eval_return=r, llm_calls=calls, llm_cache_hits=hits, wall_s=10.0 + seed)
        rows.append(row)
    path = root / experiment / "frozenlake" / algo / f"seed_{seed}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture
def tree(tmp_path):
    _write(tmp_path, "dqn", 0, [0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    _write(tmp_path, "dqn", 1, [0.0, 0.0, 0.6], [0.0, 0.0, 0.6])
    _write(tmp_path, "dqn", 2, [0.0, 1.0, 0.8], [0.0, 1.0, 0.8])
    _write(tmp_path, "dqn-prior", 0, [0.0, 0.2], [0.0, 0.2], calls=30, hits=70)
    return tmp_path


def test_ci95_uses_student_t():
    values = pd.Series([1.0, 0.6, 0.8])
    assert ci95(values) == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-6)
    assert math.isnan(ci95(pd.Series([1.0])))


@pytest.mark.parametrize("dof, quantile", [
    (1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (11, 2.2010),
    (12, 2.1788), (16, 2.1199), (25, 2.0595), (100, 1.9840)])
def test_t95_is_the_exact_quantile_for_every_dof(dof, quantile):
    # scipy.stats.t.ppf(0.975, dof) to 4 decimals; a table that rounds dof up gives 2.131 at 11
    assert t95(dof) == pytest.approx(quantile, abs=5e-5)


def test_summary_numbers(tree):
    table = summary_table(load_results(tree)).set_index("algo")
    dqn = table.loc["dqn"]
    assert dqn.seeds == 3 and dqn.episodes == 20
    assert dqn.success_mean == pytest.approx(0.8)
    assert dqn.success_std == pytest.approx(0.2)
    assert dqn.best_success_mean == pytest.approx((1.0 + 0.6 + 1.0) / 3)
    assert dqn.env_steps == pytest.approx(201.0)
    # seed 0 reaches 0.8 at episode 20, seed 2 at 10, seed 1 never
    assert dqn.episodes_to_solved_mean == pytest.approx(15.0) and dqn.seeds_solved == 2
    prior = table.loc["dqn-prior"]
    assert prior.seeds == 1 and prior.success_mean == pytest.approx(0.2)
    assert prior.llm_cache_hit_rate == pytest.approx(0.7)


def test_report_files(tree, tmp_path):
    path = write_report(tree, tmp_path / "out")
    text = path.read_text()
    # mean ± std [± 95% CI half-width]; seeds 0 and 2 reach 0.8 at env steps 200 and 102
    assert ("| exp | frozenlake | dqn | uniform | 3 | 20 | 201 | 0.800 ± 0.200 [±0.497] | "
            "0.800 ± 0.200 [±0.497] | 0.867 | 15 (2/3) | 151 |  |") in text
    assert "| 0.200 ± 0.000 | 0.200 ± 0.000 | 0.200 | never | never |  |" in text
    # prior cost: 30 calls, 70 of 100 queries from the cache
    assert "| exp | frozenlake | dqn-prior | local | 0% | 30 | 70.0% | 0 | 10 |" in text
    tex = (tmp_path / "out" / "summary.tex").read_text()
    assert r"\begin{tabular}{lllllllllllll}" in tex
    assert r"exp & frozenlake & dqn & uniform & 3 & 20 & 201 & 0.800 $\pm$ 0.200 [$\pm$0.497]" in tex
    assert r"episodes to 0.8" in tex and (tmp_path / "out" / "prior_cost.tex").exists()
    assert "![curve_frozenlake_success](curve_frozenlake_success.png)" in text
    curves = pd.read_csv(tmp_path / "out" / "curves.csv")
    mid = curves[(curves.algo == "dqn") & (curves.episode == 10)].iloc[0]
    assert mid.success_mean == pytest.approx(0.5) and mid.env_steps == pytest.approx(101.0)
    assert (tmp_path / "out" / "curve_frozenlake_success.png").stat().st_size > 1000


def test_offline_curve_and_samples_needed(tmp_path):
    from llmrl_cli.report import offline_curve, samples_needed

    # cql reaches 90% of its full-data return (1.0) at 800 transitions, cql-prior at 100
    finals = {"cql": {100: 0.2, 200: 0.4, 400: 0.6, 800: 0.95, 1600: 1.0},
              "cql-prior": {100: 0.92, 200: 0.95, 400: 1.0, 800: 1.0, 1600: 1.0}}
    for algo, points in finals.items():
        for n, ret in points.items():
            for seed in (0, 1):
                row = dict.fromkeys(CSV_COLUMNS, 0)
                row.update(env="overcooked-salad", algo=algo, k=5, seed=seed, episode=500,
                           prior="uniform" if algo == "cql" else "expert-mix:0.5",
                           # the full dataset is collected per seed: sizes differ a little
                           env_steps=n + 2 * seed if n == 1600 else n,
                           eval_return=ret + 0.01 * seed, eval_success=1.0)
                path = tmp_path / f"off-n{n}" / "overcooked-salad" / algo / f"seed_{seed}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame([row]).to_csv(path, index=False)
    curve = offline_curve(load_results(tmp_path))
    assert len(curve) == 10 and (curve.seeds == 2).all()
    needed = samples_needed(curve).set_index("algo")
    assert needed.loc["cql", "transitions_needed"] == 800
    assert needed.loc["cql-prior", "transitions_needed"] == 100
    assert needed.loc["cql", "full_transitions"] == 1601  # one point: the mean over seeds
    text = write_report(tmp_path, tmp_path / "out").read_text()
    assert "| overcooked-salad | cql-prior | expert-mix:0.5 | 1.005 | 1601 | 100 | 88% fewer |" in text
    assert (tmp_path / "out" / "offline_overcooked-salad.png").exists()


def test_offline_table_says_when_the_full_data_return_is_not_positive():
    from llmrl_cli.report import offline_rows

    needed = pd.DataFrame([
        {"env": "e", "algo": "cql", "prior": "uniform", "full_return": -0.07,
         "full_transitions": 3972, "transitions_needed": float("nan")},
        {"env": "e", "algo": "cql-prior", "prior": "local", "full_return": 0.5,
         "full_transitions": 3972, "transitions_needed": float("nan")}])
    _, rows = offline_rows(needed)
    assert rows[0][5:] == ["n/a (full-data return <= 0)", ""]
    assert rows[1][5:] == ["not reached", ""]


def test_offline_final_return_can_average_the_last_evaluations(tmp_path):
    from llmrl_cli.report import offline_curve

    for seed, returns in ((0, [0.0, 1.0, 0.2]), (1, [0.0, 0.6, 0.4])):
        rows = []
        for step, ret in zip((0, 500, 1000), returns):
            row = dict.fromkeys(CSV_COLUMNS, 0)
            row.update(env="overcooked-salad", algo="cql", k=5, seed=seed, episode=step,
                       prior="uniform", env_steps=400, eval_return=ret, eval_success=ret > 0.5)
            rows.append(row)
        path = tmp_path / "off-n400" / "overcooked-salad" / "cql" / f"seed_{seed}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
    df = load_results(tmp_path)
    assert offline_curve(df).return_mean.item() == pytest.approx((0.2 + 0.4) / 2)
    last2 = offline_curve(df, final_evals=2)
    assert last2.return_mean.item() == pytest.approx((0.6 + 0.5) / 2)
    assert last2.success_mean.item() == pytest.approx(0.5)
    assert last2.transitions.item() == 400
    text = write_report(tmp_path, tmp_path / "out", final_evals=2).read_text()
    assert "(each run's mean over its last 2 evaluations)" in text


def test_speedup_and_prior_quality(tmp_path):
    """Speed-up = baseline env steps to the threshold / the prior run's; the prior-quality
    table lists env steps to the threshold against expert-mix EPS."""
    _write(tmp_path, "dqn", 0, [0.0, 0.0, 1.0], [0, 0, 1])          # reaches at 200 steps
    _write(tmp_path, "dqn", 1, [0.0, 1.0, 1.0], [0, 1, 1])          # at 101
    for eps, (a, b) in {"0": ([1.0, 1.0], [1.0, 1.0]), "0.5": ([0.0, 1.0], [0.0, 0.9]),
                        "1": ([0.0, 0.0], [0.0, 0.0])}.items():
        exp = f"exp-expert-mix{eps}"
        _write(tmp_path, "dqn-prior", 0, a, a, prior=f"expert-mix:{eps}", experiment=exp)
        _write(tmp_path, "dqn-prior", 1, b, b, prior=f"expert-mix:{eps}", experiment=exp)
    table = summary_table(load_results(tmp_path), threshold=0.9).set_index("prior")
    assert table.loc["uniform", "env_steps_to_solved_mean"] == pytest.approx(150.5)
    assert table.loc["expert-mix:0", "env_steps_to_solved_mean"] == pytest.approx(0.5)
    assert table.loc["expert-mix:0.5", "speedup"] == pytest.approx(150.5 / 100.5)
    assert math.isnan(table.loc["expert-mix:1", "speedup"])
    text = write_report(tmp_path, tmp_path / "out", threshold=0.9).read_text()
    assert "| frozenlake | dqn-prior | 0.5 | 2/2 | 100 | 6 |" in text  # 4.303*0.707/sqrt(2)
    assert "| frozenlake | dqn-prior | 1 | 0/2 | never |  |" in text
    assert "| 1.50x |" in text and "env steps to 0.9" in text
    assert (tmp_path / "out" / "prior_quality_frozenlake.png").stat().st_size > 1000
    pq = pd.read_csv(tmp_path / "out" / "prior_quality.csv")
    assert list(pq.eps) == [0.0, 0.5, 1.0] and list(pq.seeds_solved) == [2, 2, 0]


def test_report_rejects_a_bad_threshold(tree, capsys):
    from llmrl_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["report", str(tree), "--threshold", "1.5"])
    assert exc.value.code == 2
    assert "--threshold must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_speedup_text():
    from llmrl_cli.report import _speedup_text

    assert _speedup_text(float("inf")) == "∞ (solved at step 0)"
    assert _speedup_text(1.4975) == "1.50x" and _speedup_text(float("nan")) == ""


def _offline_csv(root, experiment, algo, seed, ret, n, dataset=None):
    """One final eval row of an offline run; ``dataset`` None: a CSV from before llmrl recorded
    it (no column)."""
    row = dict.fromkeys(CSV_COLUMNS, 0)
    row.update(env="overcooked-salad", algo=algo, k=5, seed=seed, episode=500, env_steps=n,
               prior="uniform" if algo == "cql" else "expert-mix:0.5", eval_return=ret,
               eval_success=1.0)
    if dataset is not None:
        row["dataset"] = dataset
    path = root / experiment / "overcooked-salad" / algo / f"seed_{seed}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(path, index=False)


def test_report_says_which_dataset_each_offline_row_used(tmp_path):
    """Offline rows show their dataset (the CSV's ``dataset`` column; "not recorded" for older
    CSVs), online rows none; offline curves and the cql comparison keep datasets apart."""
    for seed in (0, 1):
        _offline_csv(tmp_path, "on-paper", "cql-prior", seed, 0.9, 4329, "paper")
        _offline_csv(tmp_path, "on-paper-cql", "cql", seed, 0.3, 4329, "paper")
        _offline_csv(tmp_path, "collected", "cql-prior", seed, 0.5, 3996,
                     "collected:expert-mix:0.5")
        _offline_csv(tmp_path, "old", "cql", seed, 0.1, 3996)
    _write(tmp_path, "dqn", 0, [0.0, 1.0], [0.0, 1.0])
    df = load_results(tmp_path)
    table = summary_table(df).set_index("experiment")
    assert table.loc["on-paper", "dataset"] == "paper"
    assert table.loc["collected", "dataset"] == "collected:expert-mix:0.5"
    assert table.loc["old", "dataset"] == "not recorded" and table.loc["exp", "dataset"] == ""
    # speed-up only against the baseline on the same dataset
    assert table.loc["on-paper", "speedup"] == pytest.approx(1.0)
    assert math.isnan(table.loc["collected", "speedup"])
    text = write_report(tmp_path, tmp_path / "out").read_text()
    assert "| experiment | env | algo | prior | dataset | seeds |" in text
    assert "| on-paper | overcooked-salad | cql-prior | expert-mix:0.5 | paper | 2 | 500 |" in text
    assert "| old | overcooked-salad | cql | uniform | not recorded | 2 | 500 |" in text
    assert "| exp | frozenlake | dqn | uniform |  | 1 | 10 |" in text
    assert "`dataset`: what an offline row trained on" in text
    # the offline table: one line per dataset; cql-prior on the paper's compared with cql on it
    assert "| env | algo | prior | dataset | full-data return |" in text
    assert "| overcooked-salad | cql-prior | expert-mix:0.5 | paper | 0.900 | 4329 | 4329 |" \
        in text
    assert ("| overcooked-salad | cql-prior | expert-mix:0.5 | collected:expert-mix:0.5 | 0.500 "
            "| 3996 | 3996 |  |") in text  # no cql baseline on that dataset
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(summary.dataset.fillna("")) == {"paper", "collected:expert-mix:0.5",
                                               "not recorded", ""}
