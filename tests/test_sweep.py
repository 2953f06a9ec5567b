"""llmrl sweep: grid expansion, runs in worker processes, skip finished, report failures."""

import pandas as pd
import pytest

from llmrl_cli.cli import main
from llmrl_cli.sweep import expand


def _grid(tmp_path, extra=""):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "experiment: tiny\nenv: frozenlake\nepisodes: 4\n"
        "agent: {eval_every: 2, eval_episodes: 1}\n"
        "sweep:\n  algo: [dqn, dqn-prior]\n  prior: [expert-mix:0, expert-mix:1]\n"
        "  seed: [0, 1]\n" + extra)
    return path


def test_expand_applies_priors_to_prior_algos_only(tmp_path):
    runs = expand(_grid(tmp_path), out=str(tmp_path / "r"))
    names = sorted(f"{c.experiment}/{c.algo}/{c.prior}/{c.seed}" for c in runs)
    assert names == [
        "tiny-expert-mix0/dqn-prior/expert-mix:0/0", "tiny-expert-mix0/dqn-prior/expert-mix:0/1",
        "tiny-expert-mix1/dqn-prior/expert-mix:1/0", "tiny-expert-mix1/dqn-prior/expert-mix:1/1",
        "tiny/dqn/uniform/0", "tiny/dqn/uniform/1"]


def test_sweep_runs_skips_finished_and_reports_failures(tmp_path, capsys):
    out = tmp_path / "r"
    grid = _grid(tmp_path)
    main(["sweep", str(grid), "--out", str(out), "--workers", "2"])
    csvs = sorted(out.rglob("seed_*.csv"))
    assert len(csvs) == 6
    expert = pd.read_csv(out / "tiny-expert-mix0" / "frozenlake" / "dqn-prior" / "seed_0.csv")
    assert (expert.eval_success == 1.0).all()
    stamps = [p.stat().st_mtime_ns for p in csvs]
    main(["sweep", str(grid), "--out", str(out)])  # everything is complete: nothing rewritten
    assert [p.stat().st_mtime_ns for p in csvs] == stamps
    assert "6 of 6 runs complete" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: offl\nenv: frozenlake\nagent: {grad_steps: 10}\n"
                   "sweep:\n  algo: [cql]\n  seed: [0]\n  dataset: [/no/such.jsonl]\n")
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(bad), "--out", str(out)])
    assert exc.value.code == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "failed offl-dataset_no_such.jsonl/frozenlake/cql/seed_0" in err
    assert "dataset '/no/such.jsonl' does not exist" in err and "0 of 1 runs complete" in err


def test_ray_executor_on_a_local_cluster(tmp_path, capsys, monkeypatch):
    """--executor ray: each run a Ray task on a local cluster; same files as the local pool,
    relative --out and --dataset resolved from the driver's directory, a failed run reported."""
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "experiment: tiny\nenv: frozenlake\nepisodes: 4\ndataset: missing.jsonl\n"
        "agent: {eval_every: 2, eval_episodes: 1}\n"
        "sweep:\n  algo: [dqn, dqn-prior, cql]\n  prior: [expert-mix:0]\n  seed: [0]\n")
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(grid), "--out", "r", "--executor", "ray", "--workers", "2"])
    assert exc.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "failed tiny/frozenlake/cql/seed_0" in err
    assert "dataset 'missing.jsonl' does not exist" in err and "2 of 3 runs complete" in err
    expert = pd.read_csv(tmp_path / "r" / "tiny-expert-mix0" / "frozenlake" / "dqn-prior"
                         / "seed_0.csv")
    assert list(expert.episode) == [0, 2, 4] and (expert.eval_success == 1.0).all()
    assert (tmp_path / "r" / "tiny" / "frozenlake" / "dqn" / "seed_0.csv").exists()


def test_sweep_rejects_an_unknown_executor(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(_grid(tmp_path)), "--executor", "dask"])
    assert exc.value.code == 2
    assert "unknown executor 'dask'; choose one of local, ray" in capsys.readouterr().err


def test_profiles_override_settings_and_grid(tmp_path, capsys):
    grid = _grid(tmp_path, "profiles:\n  quick:\n    episodes: 2\n    agent: {eval_episodes: 3}\n"
                           "    sweep: {seed: [5]}\n")
    paper = expand(grid, out=str(tmp_path))
    assert sorted({c.seed for c in paper}) == [0, 1] and {c.episodes for c in paper} == {4}
    quick = expand(grid, profile="quick", out=str(tmp_path))
    assert len(quick) == 3 and {c.seed for c in quick} == {5} and {c.episodes for c in quick} == {2}
    # the profile's agent mapping overrides key by key: eval_every stays from the file
    assert {(c.agent.eval_every, c.agent.eval_episodes) for c in quick} == {(2, 3)}
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(grid), "--profile", "huge", "--dry-run"])
    assert exc.value.code == 2
    assert "unknown profile 'huge'; choose one of paper, quick" in capsys.readouterr().err


def test_run_refuses_an_experiment_grid(tmp_path, capsys):
    grid = _grid(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(grid)])
    assert exc.value.code == 2
    assert f"is an experiment grid (it has 'sweep:'/'profiles:'); run it with `llmrl sweep {grid}`" \
        in " ".join(capsys.readouterr().err.split())


def test_experiment_files_expand_in_every_profile():
    """Every grid in experiments/ is valid in every profile it defines."""
    from pathlib import Path

    import yaml

    files = sorted(Path(__file__).parent.parent.glob("experiments/*.yaml"))
    grids = [f for f in files if "sweep" in yaml.safe_load(f.read_text())]
    assert len(grids) >= 4
    for path in grids:
        for profile in ["paper", *(yaml.safe_load(path.read_text()).get("profiles") or {})]:
            assert expand(path, profile=profile), (path, profile)
