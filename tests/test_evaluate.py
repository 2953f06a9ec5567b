"""llmrl evaluate and a grid's evaluate: -- the final Q under other priors, k and env options."""

import pandas as pd
import pytest

from llmrl_cli.cli import main


def _grid(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text(
        "experiment: gen\nenv: frozenlake\nalgo: dqn-prior\nepisodes: 4\n"
        "agent: {eval_every: 4, eval_episodes: 2}\n"
        "sweep:\n  prior: [expert-mix:0.5]\n  seed: [0, 1]\n"
        "evaluate:\n  prior: [expert-mix:0, uniform]\n  k: [1]\n"
        "  env_kwargs: [{}, {horizon: 3}]\n")
    return path


def test_sweep_evaluates_each_finished_run_once(tmp_path, capsys):
    out = tmp_path / "r"
    main(["sweep", str(_grid(tmp_path)), "--out", str(out)])
    path = out / "gen-expert-mix0.5" / "frozenlake" / "dqn-prior" / "seed_1.eval.csv"
    rows = pd.read_csv(path)
    assert len(rows) == 4 and set(rows.eval_k) == {1} and set(rows.eval_episodes) == {2}
    assert set(rows.eval_env_kwargs) == {"{}", '{"horizon": 3}'}
    by = rows.set_index(["eval_prior", "eval_env_kwargs"])
    # k=1 from the exact expert: the Q-function has no choice, every episode succeeds
    assert by.loc[("expert-mix:0", "{}"), "eval_success"] == 1.0
    # no path to the goal of the 4x4 map is 3 steps long
    assert by.loc[("expert-mix:0", '{"horizon": 3}'), "eval_success"] == 0.0
    assert (rows.prior == "expert-mix:0.5").all() and (rows.episode == 4).all()
    main(["sweep", str(_grid(tmp_path)), "--out", str(out)])  # done: nothing appended
    assert len(pd.read_csv(path)) == 4
    main(["report", str(out)])
    text = (out / "report.md").read_text()
    assert ("| gen-expert-mix0.5 | frozenlake | dqn-prior (expert-mix:0.5, k=5) | "
            "1.00 ± 0.00 (n=2) | 0.00 ± 0.00 (n=2) |") in text
    assert (out / "generalisation.tex").exists()
    summary = pd.read_csv(out / "summary.csv")  # eval files are not runs
    assert len(summary) == 1 and summary.seeds[0] == 2


def test_evaluate_command_and_its_errors(tmp_path, capsys):
    out = tmp_path / "r"
    main(["run", "--env", "frozenlake", "--algo", "dqn", "--episodes", "2", "--out", str(out),
          "--seed", "3"])
    csv = out / "default" / "frozenlake" / "dqn" / "seed_3.csv"
    capsys.readouterr()
    main(["evaluate", str(csv), "--prior", "expert-mix:0", "--k", "1", "--episodes", "3"])
    captured = capsys.readouterr()
    assert "eval return 1.000 success 1.00 (expert-mix:0, k=1" in captured.err
    assert captured.out.strip() == str(csv.with_suffix(".eval.csv"))
    for args, message in [
        (["evaluate", str(tmp_path / "seed_0.csv")], "seed_0.yaml does not exist"),
        (["evaluate", str(tmp_path / "notes.txt")], "give a run's seed_<n>.csv or seed_<n>.yaml"),
        (["evaluate", str(csv), "--env-option", "horizon"], "--env-option must be KEY=VALUE"),
        (["evaluate", str(csv), "--k", "0"], "--k must be >= 1, got 0"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2, args
        assert message in capsys.readouterr().err, args
    csv.with_name("seed_3.ckpt.pt").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(csv)])
    assert exc.value.code == 2 and "train the run first" in capsys.readouterr().err


def test_the_papers_generalisation_test_is_one_spec():
    """Another model, server, k and decoding: Qwen1.5-32B, k 15, T 0.8, top_p 0.95
    (value-based/test_alfworld.py; readme.md:37)."""
    from llmrl_cli.config import build_config
    from llmrl_cli.errors import UserError
    from llmrl_cli.evaluate import EvalSpec

    cfg = build_config(env="alfworld-pick", algo="dqn-prior", prior="local")
    spec = EvalSpec(prior="vllm", prior_model="Qwen/Qwen1.5-32B", prior_url="http://gpu:8000",
                    k=15, temperature=0.8, top_p=0.95)
    out = spec.resolve(cfg)
    assert (out.prior, out.prior_model, out.prior_url, out.k) == (
        "vllm", "Qwen/Qwen1.5-32B", "http://gpu:8000", 15)
    assert (out.temperature, out.top_p) == (0.8, 0.95)
    assert (cfg.temperature, cfg.top_p, cfg.k) == (1.0, 1.0, 5)  # the run's own are untouched
    with pytest.raises(UserError, match=r"top_p must be in \(0, 1\], got 1.5"):
        EvalSpec(top_p=1.5).resolve(cfg)
    with pytest.raises(UserError, match="--prior-url is for --prior vllm"):
        EvalSpec(prior_url="http://gpu:8000").resolve(cfg)


def test_an_eval_csv_written_before_the_decoding_columns_gains_them(tmp_path, capsys):
    out = tmp_path / "r"
    main(["run", "--env", "frozenlake", "--algo", "dqn", "--episodes", "2", "--out", str(out)])
    csv = out / "default" / "frozenlake" / "dqn" / "seed_0.csv"
    main(["evaluate", str(csv), "--prior", "expert-mix:0", "--k", "1", "--episodes", "1"])
    path = csv.with_suffix(".eval.csv")
    old = pd.read_csv(path).drop(columns=["eval_prior_model", "eval_temperature", "eval_top_p"])
    old.to_csv(path, index=False)  # as an older llmrl wrote it
    main(["evaluate", str(csv), "--prior", "expert-mix:0", "--k", "1", "--episodes", "1"])
    assert "already evaluated" in capsys.readouterr().err  # the same evaluation, not repeated
    main(["evaluate", str(csv), "--prior", "expert-mix:0", "--k", "1", "--episodes", "1",
          "--temperature", "0.8"])
    rows = pd.read_csv(path)
    assert len(rows) == 2 and list(rows.eval_temperature) == [1.0, 0.8]
    assert list(rows.eval_prior_model) == ["SmolLM2-135M-Instruct"] * 2


def test_an_evaluation_with_an_option_the_env_does_not_take_is_one_line():
    from llmrl_cli.config import build_config
    from llmrl_cli.errors import UserError
    from llmrl_cli.evaluate import EvalSpec

    cfg = build_config(env="frozenlake", algo="dqn")
    with pytest.raises(UserError, match="frozenlake has no option 'split'; its options: "
                                        "map_name, slippery, horizon"):
        EvalSpec(env_kwargs={"split": "unseen"}).resolve(cfg)
