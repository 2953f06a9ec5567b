"""Fault injection on a run's files: a resume checks them instead of trusting them, and
``--overwrite`` keeps the earlier run until the new one starts. Each case ends where an
uninterrupted run ends, or stops with one line that names the file and the remedy."""

import pandas as pd
import pytest

from llmrl_cli.config import build_config
from llmrl_cli.errors import UserError
from llmrl_cli.report import load_results
from llmrl_cli.runner import Runner

#: wall times and the encoder cache split (rebuilt, not checkpointed, on resume)
TIMING = ["wall_s", "prior_seconds", "encoder_seconds", "update_seconds", "encoder_hits"]


class Killed(Exception):
    pass


def _cfg(tmp_path, **kw):
    return build_config(env="frozenlake", algo="dqn", episodes=15, seed=0, device="cpu",
                        out=str(tmp_path / "results"), eval_overlap=False,
                        agent={"eval_every": 5, "eval_episodes": 2}, **kw)


def _table(path):
    return pd.read_csv(path).drop(columns=TIMING)


def _reference(tmp_path):
    return _table(Runner(_cfg(tmp_path / "reference"), log=lambda *_: None).run())


def _killed_after_eval_at(tmp_path, episode: int):
    """A run killed right after the row (and checkpoint) of its evaluation at ``episode``."""
    cfg = _cfg(tmp_path / "killed")

    def progress(done, total, msg):
        if msg and done == episode:
            raise Killed

    with pytest.raises(Killed):
        Runner(cfg, progress=progress, log=lambda *_: None).run()
    return cfg


def _resume(cfg):
    logs = []
    table = _table(Runner(cfg, log=logs.append).run())
    return table, logs


def test_a_deleted_csv_is_restored_from_the_checkpoint(tmp_path):
    cfg = _killed_after_eval_at(tmp_path, 10)
    csv = cfg.stem.with_suffix(".csv")
    csv.unlink()
    table, logs = _resume(cfg)
    assert logs[0] == f"{csv} is missing; restored its 3 rows from the checkpoint"
    pd.testing.assert_frame_equal(table, _reference(tmp_path))


def test_a_csv_cut_mid_line_is_restored_from_the_checkpoint(tmp_path):
    cfg = _killed_after_eval_at(tmp_path, 10)
    csv = cfg.stem.with_suffix(".csv")
    csv.write_bytes(csv.read_bytes()[:-25])  # a kill (or a full disk) in the middle of a row
    table, logs = _resume(cfg)
    assert logs[0] == f"{csv} was cut short; restored its 3 rows from the checkpoint"
    pd.testing.assert_frame_equal(table, _reference(tmp_path))


def test_an_edited_csv_is_kept_aside_and_its_rows_restored(tmp_path):
    cfg = _killed_after_eval_at(tmp_path, 10)
    csv = cfg.stem.with_suffix(".csv")
    edited = csv.read_text().replace("frozenlake,dqn", "frozenlake,mine", 1)
    csv.write_text(edited)
    table, logs = _resume(cfg)
    aside = csv.with_name("seed_0.changed.csv")
    assert logs[0] == (f"{csv} was changed since its checkpoint; kept it as {aside} and "
                       "restored its 3 rows from the checkpoint")
    assert aside.read_text() == edited
    pd.testing.assert_frame_equal(table, _reference(tmp_path))
    assert len(load_results(tmp_path / "killed" / "results")) == 4  # the kept file is not a run


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    cfg = _killed_after_eval_at(tmp_path, 10)
    ckpt = cfg.stem.with_name("seed_0.ckpt.pt")
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    table, logs = _resume(cfg)
    assert logs[0].startswith(f"{ckpt} cannot be read (")
    assert logs[0].endswith(f"); resuming from the previous one, "
                            f"{cfg.stem.with_name('seed_0.ckpt.prev.pt')}")
    assert logs[1:] == [f"resuming {cfg.stem.with_suffix('.csv')} from episode 5"]
    pd.testing.assert_frame_equal(table, _reference(tmp_path))


def test_without_a_readable_checkpoint_a_resume_stops_with_one_line(tmp_path):
    cfg = _killed_after_eval_at(tmp_path, 10)
    ckpt = cfg.stem.with_name("seed_0.ckpt.pt")
    ckpt.write_bytes(b"not a checkpoint")
    cfg.stem.with_name("seed_0.ckpt.prev.pt").unlink()
    with pytest.raises(UserError) as err:
        Runner(cfg, log=lambda *_: None).run()
    message = str(err.value)
    assert message.startswith(f"{ckpt} cannot be read (") and "\n" not in message
    assert message.endswith("and there is no earlier checkpoint; pass --overwrite to run it "
                            "again")


def test_overwrite_moves_the_old_run_aside_only_when_the_new_one_starts(tmp_path):
    cfg = _cfg(tmp_path)
    csv = Runner(cfg, log=lambda *_: None).run()
    evals = cfg.stem.with_name("seed_0.eval.csv")
    evals.write_text("episode,eval_return\n15,0.0\n")  # an `llmrl evaluate` of the old run
    old = {p.name: p.read_bytes() for p in cfg.run_dir.glob("seed_0.*")}
    broken = _cfg(tmp_path, encoder=str(tmp_path / "no-such-encoder"))
    with pytest.raises(UserError):  # a typo: the run cannot start, and nothing is lost
        Runner(broken, overwrite=True, log=lambda *_: None).run()
    assert {p.name: p.read_bytes() for p in cfg.run_dir.glob("seed_0.*")} == old
    logs = []
    changed = _cfg(tmp_path, k=3)
    Runner(changed, overwrite=True, log=logs.append).run()
    aside = cfg.run_dir / "replaced" / "seed_0-1"
    assert logs == [f"moved the earlier seed_0 files to {aside}"]
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == old
    assert not evals.exists() and "k: 3" in cfg.stem.with_suffix(".yaml").read_text()
    assert list(pd.read_csv(csv).episode) == [0, 5, 10, 15]
    assert list(load_results(tmp_path / "results").k) == [3] * 4  # not the run moved aside


def _cli_error(capsys, *args):
    from llmrl_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("content, message", [
    (b"", "is empty; write the settings to change (`llmrl config show` lists them)"),
    (b"k: 3\nk: 4\n", "is not valid YAML at line 2: the key 'k' is given twice"),
    (b"k: \xff\n", "is not UTF-8 text (byte 3)"),
])
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "mine.yaml"
    path.write_bytes(content)
    err = _cli_error(capsys, "run", "--config", str(path))
    assert err == f"llmrl: error: config file {str(path)!r} {message}\n"


def test_a_sweep_with_an_empty_list_is_an_error(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("env: frozenlake\nsweep:\n  algo: [dqn]\n  seed: []\n")
    err = _cli_error(capsys, "sweep", str(path), "--out", str(tmp_path / "results"))
    assert err == f"llmrl: error: {path}: the sweep's list of seed is empty, so it has no runs\n"


def test_an_unknown_env_option_and_an_out_that_is_a_file_are_one_line(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("env_kwargs: {split: unseen}\n")  # an ALFWorld option
    err = _cli_error(capsys, "run", "--env", "frozenlake", "--config", str(config))
    assert err == ("llmrl: error: frozenlake has no option 'split'; its options: map_name, "
                   "slippery, horizon\n")
    afile = tmp_path / "results.txt"
    afile.write_text("")
    err = _cli_error(capsys, "run", "--env", "frozenlake", "--out", str(afile))
    assert err == f"llmrl: error: --out {afile} is a file, not a folder\n"


def test_ctrl_c_in_a_run_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from llmrl_cli.cli import main

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--env", "frozenlake", "--algo", "dqn", "--out", str(tmp_path)])
    assert exc.value.code == 130
    assert capsys.readouterr().err.endswith(
        "llmrl: interrupted (start the same command again: it resumes from the last "
        "checkpoint)\n")


# -- llmrl report states what it averages ----------------------------------------------------
HEADER = ("env,algo,prior,k,seed,episode,env_steps,eval_return,eval_success,train_return,"
          "llm_calls,llm_cache_hits,wall_s")


def _write_run(root, seed: int, episodes: list[int], budget: int):
    """A dqn run's CSV (success 0.5 at every eval point) and the config beside it."""
    folder = root / "exp" / "frozenlake" / "dqn"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"frozenlake,dqn,uniform,5,{seed},{e},{6 * e},0.5,0.5,,0,0,1.0" for e in episodes]
    (folder / f"seed_{seed}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    (folder / f"seed_{seed}.yaml").write_text(f"algo: dqn\nepisodes: {budget}\n")
    return folder / f"seed_{seed}.csv"


@pytest.mark.parametrize("damage, reason", [
    (lambda text: text[:-30], "has a row whose episode is not a number (a row cut short?)"),
    (lambda text: "\udcff", "cannot be read ("),
])
def test_report_names_a_csv_it_cannot_use_and_skip_bad_leaves_it_out(tmp_path, capsys, damage,
                                                                     reason):
    _write_run(tmp_path, 0, [0, 5, 10], 10)
    bad = _write_run(tmp_path, 1, [0, 5, 10], 10)
    bad.write_bytes(damage(bad.read_text()).encode(errors="surrogateescape"))
    err = _cli_error(capsys, "report", str(tmp_path))
    assert err.startswith(f"llmrl: error: {bad} {reason}")
    assert err.endswith("; fix or remove it, or pass --skip-bad to leave it out\n")
    from llmrl_cli.cli import main

    main(["report", str(tmp_path), "--skip-bad"])
    assert f"warning: left out {bad} {reason}" in capsys.readouterr().err
    assert list(pd.read_csv(tmp_path / "summary.csv").seeds) == [1]


def test_report_leaves_out_unfinished_runs_unless_asked(tmp_path, capsys):
    from llmrl_cli.cli import main

    _write_run(tmp_path, 0, [0, 5, 10], 10)
    _write_run(tmp_path, 1, [0, 5], 10)  # killed at episode 5 of 10
    main(["report", str(tmp_path)])
    assert "left out 1 unfinished run(s)" in capsys.readouterr().err
    assert list(pd.read_csv(tmp_path / "summary.csv").seeds) == [1]
    assert "exp/frozenlake/dqn seed 1: at 5 of 10" in (tmp_path / "report.md").read_text()
    main(["report", str(tmp_path), "--include-unfinished"])
    assert list(pd.read_csv(tmp_path / "summary.csv").seeds) == [2]


def test_report_shows_seeds_with_different_budgets_apart(tmp_path):
    from llmrl_cli.report import write_report

    _write_run(tmp_path, 0, [0, 5, 10], 10)
    _write_run(tmp_path, 1, [0, 5, 10, 15, 20], 20)
    write_report(tmp_path, log=lambda *_: None)
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(zip(table.experiment, table.episodes, table.seeds)) == [
        ("exp (budget 10)", 10, 1), ("exp (budget 20)", 20, 1)]
