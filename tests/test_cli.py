import dataclasses
import re

import pytest

from llmrl_cli.cli import main
from llmrl_cli.config import CONCERNS, RunConfig


def _run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


UNKNOWN_LAKE = ("llmrl: error: unknown env 'lake'; choose one of: alfworld, alfworld-pick, babyai-goto, "
                "babyai-pickup, babyai-putnext, babyai-unlock, crafter, frozenlake, overcooked-salad, "
                "overcooked-tomato, sokoban, textworld-cooking, textworld-treasure")


@pytest.mark.parametrize("args, message", [
    (("run", "--env", "lake"),
     UNKNOWN_LAKE),
    (("run", "--algo", "ppo"), "llmrl: error: unknown algo 'ppo'; choose one of: cql, cql-prior, dqn, dqn-prior"),
    (("run", "--algo", "dqn-prior", "--prior", "gpt"),
     "llmrl: error: unknown prior 'gpt'; choose one of: uniform, local, vllm, expert-mix:EPS"),
    (("run", "--algo", "dqn-prior", "--prior", "expert-mix:2"),
     "llmrl: error: bad prior 'expert-mix:2': write expert-mix:EPS with EPS in [0, 1]"),
    (("run", "--prior-mode", "guess"),
     "llmrl: error: unknown prior mode 'guess'; choose one of: sample, score"),
    (("run", "--prior-permutations", "4"),
     "llmrl: error: --prior-permutations averages scores: use it with --prior-mode score"),
    (("run", "--prior-url", "http://x:1"),
     "llmrl: error: --prior-url is for --prior vllm (got --prior local)"),
    (("prior", "probe", "--prior", "vllm:guess"),
     "llmrl: error: unknown prior mode 'guess'; choose one of: sample, score"),
    (("run", "--k", "x"), "llmrl: error: bad value for --k:"),
    (("run", "--k", "0"), "llmrl: error: --k must be >= 1, got 0"),
    (("run", "--projection", "fuzzy"),
     "llmrl: error: unknown projection 'fuzzy'; choose one of: normalised, paper"),
    (("run", "--prior-uniform-mix", "1.5"), "llmrl: error: --prior-uniform-mix must be in [0, 1]"),
    (("run", "--device", "tpu"), "llmrl: error: unknown device 'tpu'; choose one of: auto, cpu, cuda"),
    (("run", "--bogus"), "llmrl: error: no such option: --bogus; valid options: --algo,"),
    (("report", "/no/such/folder"), "llmrl: error: results folder '/no/such/folder' does not exist"),
    (("evaluate",), "llmrl: error: missing argument run; see `llmrl evaluate --help`"),
    (("sweep",), "llmrl: error: missing argument file; see `llmrl sweep --help`"),
    (("collect", "--env", "frozenlake"),
     "llmrl: error: missing option --out; see `llmrl collect --help`"),
    (("run", "--prior-draws", "sometimes"),
     "llmrl: error: unknown prior_draws 'sometimes'; choose one of: fresh, memo"),
    (("run", "--algo", "llm", "--prior", "uniform"),
     "llmrl: error: --algo llm acts by the prior alone; give it an LLM or expert-mix prior"),
    (("prompt", "--env", "lake"),
     UNKNOWN_LAKE),
    (("prompt", "--steps", "0"), "llmrl: error: --steps must be >= 1, got 0"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, *args)
    assert code == 2
    assert err.startswith(message)
    assert "\n" not in err and "Traceback" not in err


def test_an_unreachable_server_is_retried_a_line_each_then_one_error(capsys, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, "run", "--prior", "vllm", "--prior-url", "http://127.0.0.1:9",
                     "--episodes", "1")
    lines = err.splitlines()
    assert code == 2 and len(lines) == 4 and "Traceback" not in err
    for attempt, delay in ((1, 1), (2, 2), (3, 4)):
        assert lines[attempt - 1].startswith("llmrl: vLLM server at http://127.0.0.1:9: no answer (")
        assert lines[attempt - 1].endswith(f"; retry {attempt} of 3 in {delay} s")
    assert lines[3].startswith("llmrl: error: vLLM server at http://127.0.0.1:9 is unreachable "
                               "after 4 tries (no answer (")


def test_bad_yaml_and_unknown_setting(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: frozenlake\nagent: [unclosed\n")
    code, err = _run(capsys, "run", "--config", str(bad))
    assert code == 2 and err.startswith(f"llmrl: error: config file '{bad}' is not valid YAML")
    typo = tmp_path / "typo.yaml"
    typo.write_text("env: frozenlake\nepisdoes: 3\n")
    code, err = _run(capsys, "run", "--config", str(typo))
    assert code == 2 and err.startswith("llmrl: error: unknown setting(s) episdoes; valid run")
    agent = tmp_path / "agent.yaml"
    agent.write_text("agent:\n  exploration: boltzmann\n")
    code, err = _run(capsys, "run", "--config", str(agent))
    assert code == 2 and err == ("llmrl: error: bad agent setting: unknown exploration 'boltzmann'; "
                                 "choose one of: eps-greedy, eps-softmax, greedy, softmax")
    memory = tmp_path / "memory.yaml"
    memory.write_text("env: frozenlake\nprior_batch_kv_mb: 0\n")
    code, err = _run(capsys, "run", "--config", str(memory))
    assert code == 2 and err.startswith("llmrl: error: prior_batch_kv_mb must be >= 1, got 0")


@pytest.mark.parametrize("yaml_text, message", [
    ("prior_cpu_kernels: maybe\n", "prior_cpu_kernels must be true or false, got 'maybe'"),
    ("prefix_cache_mb: maybe\n", "prefix_cache_mb must be an integer, got 'maybe'"),
    ("k: 2.5\n", "k must be an integer, got 2.5"),
    ("dataset: 3\n", "dataset must be a string (or null), got 3"),
    ("env_kwargs: [1]\n", "env_kwargs must be a mapping, got [1]"),
    ("agent:\n  lr: fast\n", "agent.lr must be a number, got 'fast'"),
    ("agent:\n  batch_size: true\n", "agent.batch_size must be an integer, got True"),
])
def test_a_yaml_value_of_the_wrong_type_is_one_error_line(capsys, tmp_path, yaml_text, message):
    config = tmp_path / "typed.yaml"
    config.write_text("env: frozenlake\n" + yaml_text)
    code, err = _run(capsys, "run", "--config", str(config))
    assert (code, err) == (2, f"llmrl: error: {message}")


def test_yaml_numbers_without_a_dot_are_numbers():
    # PyYAML (YAML 1.1) reads 1e-3 as a string; a number field takes it as 0.001
    from llmrl_cli.config import build_config
    cfg = build_config({"env": "frozenlake", "temperature": 1, "agent": {"lr": "1e-3"}})
    assert cfg.agent.lr == 0.001 and isinstance(cfg.agent.lr, float) and cfg.temperature == 1


def test_envs_and_priors_list_choices(capsys):
    main(["envs"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "actions", "expert", "description"]
    assert lines[1].split()[:3] == ["frozenlake", "4", "yes"]
    assert [line.split()[:3] for line in lines if line.startswith(("babyai-goto", "sokoban"))] \
        == [["babyai-goto", "6", "yes"], ["sokoban", "4", "yes"]]
    main(["priors"])
    out = capsys.readouterr().out
    assert out.startswith("uniform") and "\nlocal " in out and "--prior-uniform-mix" in out
    assert "\nvllm " in out and "--prior-url" in out and "\nexpert-mix:EPS " in out


def test_run_and_report_from_yaml(capsys, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(
        "experiment: tiny\nenv: frozenlake\nalgo: dqn\nepisodes: 4\n"
        f"out: {tmp_path / 'results'}\nagent:\n  eval_every: 2\n  eval_episodes: 1\n"
    )
    main(["run", "--config", str(config), "--seed", "3", "--device", "cpu"])
    csv_path = capsys.readouterr().out.strip()
    assert csv_path.endswith("tiny/frozenlake/dqn/seed_3.csv")
    main(["report", str(tmp_path / "results"), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| tiny | frozenlake | dqn | uniform | 1 | 4 |" in report
    assert capsys.readouterr().out.splitlines() == [  # where the figure and table are
        f"report:  {tmp_path / 'report' / 'report.md'}",
        f"table:   {tmp_path / 'report' / 'summary.csv'}",
        f"figure:  {tmp_path / 'report' / 'curve_frozenlake_success.png'}"]
    assert (tmp_path / "report" / "curve_frozenlake_success.png").stat().st_size > 1000


def test_prior_probe_prints_and_writes_per_state_quality(capsys, tmp_path):
    import pandas as pd

    out = tmp_path / "probe.csv"
    main(["prior", "probe", "--prior", "expert-mix:0", "--prior", "uniform", "--states", "4",
          "--show", "1", "--csv", str(out)])
    printed = capsys.readouterr().out
    assert "state 0:" in printed and "state 1:" not in printed
    assert "prior quality over 4 states" in printed
    df = pd.read_csv(out)
    assert len(df) == 8 and set(df.prior) == {"expert-mix:0", "uniform"}
    expert = df[df.prior == "expert-mix:0"]
    assert (expert.p_optimal == 1.0).all() and expert.optimal_in_k.all()
    uniform = df[df.prior == "uniform"]
    assert (uniform.probs == "0.2500|0.2500|0.2500|0.2500").all()
    assert uniform.p_optimal.tolist() == [
        row.optimal.count("|") * 0.25 + 0.25 for row in uniform.itertuples()]


def test_prompt_prints_the_priors_prompts_and_a_q_input(capsys):
    from llmrl_cli.config import build_config
    from llmrl_cli.prompt_walk import walk

    main_code = None
    try:
        main(["prompt", "--env", "overcooked-salad", "--seed", "0", "--steps", "2"])
    except SystemExit as exc:  # pragma: no cover - typer may exit 0
        main_code = exc.code
    assert main_code in (None, 0)
    out = capsys.readouterr().out
    steps = walk(build_config(env="overcooked-salad", algo="dqn-prior", seed=0), 2)
    assert out.count("===== state ") == 2 and "history 5" in out
    assert steps[0].prompt in out and steps[1].prompt in out
    assert steps[0].prompt.startswith("Your task is to serve the dish of a bowl only containing "
                                      "chopped tomato and lettuce.\nHistory:\n\nCurrent "
                                      "Observation: ")
    # the second prompt carries the first step: the expert's action
    assert f"Action: {steps[0].action}." in steps[1].prompt
    observation = steps[0].prompt.split("Current Observation: ")[1].split("\n")[0]
    assert steps[0].q_input == f"Observation: {observation},  Action: {steps[0].action}."


def test_config_show_prints_each_setting_with_its_source(capsys, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("k: 3\nagent: {lr: 0.001}\n")
    main(["config", "show", "--env", "overcooked-salad", "--algo", "dqn-prior", "--config",
          str(config)])
    # setting, value, source, the paper's value: columns two or more spaces apart
    shown = capsys.readouterr().out.splitlines()
    rows = {cols[0]: cols[1:] for cols in (re.split(r"\s{2,}", line) for line in shown)}
    assert rows["setting"] == ["value", "source", "paper"]
    assert rows["env"] == ["'overcooked-salad'", "flag", "-"]
    # the paper's Salad script
    assert rows["history_length"] == ["5", "preset", "Tomato 3, Salad 5, ALFWorld 0"]
    assert rows["agent.epsilon"] == ["0.2", "preset per_algo", "0.2"]
    assert rows["k"] == ["3", "yaml", "5 (ALFWorld test 15)"]
    assert rows["agent.lr"] == ["0.001", "yaml", "5e-4"]
    assert rows["temperature"] == ["1.0", "default", "1.0 (ALFWorld test 0.8)"]
    # grouped by concern, every setting once
    headings = [line for line in shown if line.startswith("# ")]
    assert headings == [f"# {concern}" for concern in CONCERNS]
    assert sorted(n for names in CONCERNS.values() for n in names) == sorted(
        f.name for f in dataclasses.fields(RunConfig))
    main(["config", "show", "--algo", "dqn", "--explain"])
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("agent.batch_size "))
    assert lines[at + 1].strip() == "transitions per gradient step [transitions]"
