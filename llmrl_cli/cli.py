"""The ``llmrl`` command line: run, sweep, evaluate, collect, report, bench, envs, priors, prior."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import UserError

try:  # typer >= 0.20 vendors click; older versions use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Reinforcement learning with LLM priors (Yan et al., ICLR 2025).")
prior_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                        help="Tools for the LLM prior.")
app.add_typer(prior_app, name="prior")
alfworld_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                           help="ALFWorld games (Pick & Place) for the real engine.")
app.add_typer(alfworld_app, name="alfworld")
console = Console(stderr=True)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@app.command()
def run(
    env: Optional[str] = typer.Option(None, help="environment (see `llmrl envs`)"),
    algo: Optional[str] = typer.Option(
        None, help="dqn | dqn-prior | cql | cql-prior | gflan | gflan-prior | llm"),
    prior: Optional[str] = typer.Option(
        None, help="uniform | local | vllm | expert-mix:EPS (see `llmrl priors`)"),
    prior_model: Optional[str] = typer.Option(
        None, help="local: model folder or .gguf file; vllm: the served model name"),
    prior_url: Optional[str] = typer.Option(
        None, help="vllm server (default http://127.0.0.1:8000)"),
    prior_mode: Optional[str] = typer.Option(
        None, help="sample (k completions, projected) | score (p over admissible actions)"),
    prior_permutations: Optional[int] = typer.Option(
        None, help="score mode: average over N orderings of the actions in the prompt (1)"),
    prior_uniform_mix: Optional[float] = typer.Option(
        None, help="smooth the prior: (1-EPS)*p_LLM + EPS*uniform (default 0, off)"),
    projection: Optional[str] = typer.Option(
        None, help="sample mode: paper (substring count, the default) | normalised (ours)"),
    stop_on_newline: Optional[bool] = typer.Option(
        None, "--stop-on-newline/--no-stop-on-newline",
        help="sample mode: also stop and cut completions at a newline (ours; paper: no)"),
    max_new_tokens: Optional[int] = typer.Option(
        None, help="sample mode: tokens per completion (paper 10)"),
    prior_draws: Optional[str] = typer.Option(
        None, help="fresh (new proposals at every visit of a prompt) | memo (the first ones "
        "for the whole run); default: the env's, as the paper"),
    history_length: Optional[int] = typer.Option(
        None, help="observation/action lines in the prior's prompt (default: the env's)"),
    chat_template: Optional[bool] = typer.Option(None, "--chat-template/--no-chat-template",
                                                 help="wrap prompts in the model's chat template"),
    temperature: Optional[float] = typer.Option(None, help="prior sampling temperature (1.0)"),
    top_p: Optional[float] = typer.Option(None, help="prior nucleus sampling (1.0)"),
    k: Optional[int] = typer.Option(None, help="proposals per state (5)"),
    episodes: Optional[int] = typer.Option(None, help="training episodes"),
    seed: Optional[int] = typer.Option(None, help="drives env, torch, numpy and prior sampling"),
    num_envs: Optional[int] = typer.Option(None, help="environments stepping together"),
    num_env_workers: Optional[int] = typer.Option(
        None, help="step the envs in this many worker processes, all at once (0: in this "
        "process, the default); the same results"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    encoder: Optional[str] = typer.Option(None, help="encoder folder (default all-MiniLM-L6-v2)"),
    experiment: Optional[str] = typer.Option(None, help="results sub-folder name (default)"),
    out: Optional[str] = typer.Option(None, help="results root folder (results)"),
    config: Optional[Path] = typer.Option(None, help="YAML file of settings"),
    prior_cache: Optional[bool] = typer.Option(None, "--prior-cache/--no-prior-cache",
                                               help="persistent proposal cache (on)"),
    dataset: Optional[str] = typer.Option(
        None, help="cql/cql-prior: dataset file, ours or the paper's JSONL (default: collect "
        "133 expert-mix:0.5 episodes, 75% successful, once per env and seed)"),
    max_transitions: Optional[int] = typer.Option(
        None, help="cql/cql-prior: train on this many transitions (whole episodes, seeded)"),
    grad_steps: Optional[int] = typer.Option(
        None, help="cql/cql-prior: gradient steps (paper 10000)"),
    overwrite: bool = typer.Option(False, help="replace existing results of this run"),
) -> None:
    """Train one agent: env x algo x prior x seed -> CSV, config and checkpoint."""
    from .config import build_config, load_yaml

    flags = dict(env=env, algo=algo, prior=prior, prior_model=prior_model, prior_url=prior_url,
                 prior_mode=prior_mode, prior_permutations=prior_permutations,
                 prior_uniform_mix=prior_uniform_mix, projection=projection,
                 stop_on_newline=stop_on_newline, max_new_tokens=max_new_tokens,
                 prior_draws=prior_draws, history_length=history_length,
                 chat_template=chat_template, temperature=temperature, top_p=top_p, k=k,
                 episodes=episodes, seed=seed, num_envs=num_envs,
                 num_env_workers=num_env_workers, device=device, encoder=encoder,
                 experiment=experiment, out=out, prior_cache=prior_cache, dataset=dataset,
                 max_transitions=max_transitions,
                 agent={"grad_steps": grad_steps} if grad_steps is not None else None)
    data = load_yaml(config) if config else None
    if data and ("sweep" in data or "profiles" in data):
        raise UserError(f"{config} is an experiment grid (it has 'sweep:'/'profiles:'); run it "
                        f"with `llmrl sweep {config}`")
    cfg = build_config(data, **flags)
    from .priors import preflight

    preflight(cfg)
    _quiet_libraries()
    from .algos import algorithm, make_loop

    offline = algorithm(cfg.algo).offline
    console.print(f"[bold]llmrl run[/] {cfg.env} × {cfg.algo} × prior {cfg.prior_label} "
                  f"(k={cfg.k}) seed {cfg.seed} → {cfg.stem}.csv")
    with Progress(TextColumn("gradient steps" if offline else "episodes"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=console) as bar:
        task = bar.add_task("", total=cfg.agent.grad_steps if offline else cfg.episodes)
        runner = make_loop(cfg, overwrite=overwrite, log=console.print,
                           progress=lambda done, total, msg: bar.update(
                               task, completed=done, **({"description": msg} if msg else {})))
        path = runner.run()
    if hasattr(runner, "prior"):
        p, e = runner.prior.stats, runner.encoder.stats
        console.print(
            f"prior: {p.model_queries} model queries, {p.cache_hits}/{p.queries} cache hits "
            f"({p.hit_rate:.0%}), {p.seconds:.1f} s; encoder: {e.encoded} texts encoded, "
            f"{e.hit_rate:.0%} cache hits, {e.seconds:.1f} s")
    typer.echo(str(path))


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="a finished run: its seed_<n>.csv or seed_<n>.yaml"),
    prior: Optional[str] = typer.Option(None, help="evaluate with this prior (default: the "
                                        "run's own)"),
    k: Optional[int] = typer.Option(None, help="proposals per state (default: the run's)"),
    prior_mode: Optional[str] = typer.Option(None, help="sample | score (default: the run's)"),
    prior_model: Optional[str] = typer.Option(
        None, help="another prior model (local: folder or .gguf; vllm: the served name)"),
    prior_url: Optional[str] = typer.Option(None, help="vllm: another server"),
    temperature: Optional[float] = typer.Option(None, help="prior sampling temperature"),
    top_p: Optional[float] = typer.Option(None, help="prior nucleus sampling"),
    env_option: list[str] = typer.Option([], help="KEY=VALUE env option, e.g. split=unseen "
                                          "(repeatable)"),
    episodes: Optional[int] = typer.Option(None, help="eval episodes (default: the run's)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
) -> None:
    """Evaluate a trained Q-function with another prior, model, k, decoding or env option
    (generalisation; the paper's test: --prior vllm --prior-model Qwen1.5-32B --k 15
    --temperature 0.8 --top-p 0.95)."""
    from .evaluate import EvalSpec, eval_csv_path, evaluate_run

    cfg = run_config_of(run, device)
    spec = EvalSpec(prior=prior, k=k, prior_mode=prior_mode, prior_model=prior_model,
                    prior_url=prior_url, temperature=temperature, top_p=top_p,
                    env_kwargs=parse_env_options(env_option), episodes=episodes)
    _quiet_libraries()
    row = evaluate_run(cfg, spec, log=lambda msg: console.print(msg))
    console.print(f"eval return {float(row['eval_return']):.3f} success "
                  f"{float(row['eval_success']):.2f} ({row['eval_prior']}, k={row['eval_k']}, "
                  f"env {row['eval_env_kwargs']})")
    typer.echo(str(eval_csv_path(cfg)))


def run_config_of(path: Path, device: Optional[str] = None):
    """The RunConfig of the run whose seed_<n>.csv/.yaml is at ``path`` (wherever it now is)."""
    from .config import build_config, load_yaml

    path = Path(path)
    if path.suffix not in (".csv", ".yaml") or not path.name.startswith("seed_"):
        raise UserError(f"{path}: give a run's seed_<n>.csv or seed_<n>.yaml")
    yaml_path = path.with_suffix(".yaml")
    if not yaml_path.exists():
        raise UserError(f"{yaml_path} does not exist (is {path} a run's file?)")
    data = load_yaml(yaml_path)
    data.update(out=str(path.parent.parent.parent.parent), experiment=path.parent.parent.parent.name)
    return build_config(data, device=device)


def parse_env_options(options: list[str]) -> dict:
    """["split=unseen", "horizon=20"] -> {"split": "unseen", "horizon": 20} (YAML-typed values)."""
    import yaml

    out = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--env-option must be KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@app.command("sweep")
def sweep_command(
    file: Path = typer.Argument(..., help="experiment YAML with a 'sweep:' grid"),
    workers: int = typer.Option(1, help="local: runs at a time (worker processes); ray: "
                                "each run gets cpu_count/workers CPUs"),
    executor: str = typer.Option("local", help="local (process pool) | ray (a Ray task per run)"),
    ray_address: Optional[str] = typer.Option(
        None, help="ray: cluster address (auto, ray://host:10001); default: start a local one"),
    out: Optional[str] = typer.Option(None, help="results root folder (results)"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    profile: str = typer.Option("paper", help="paper (the file's budgets) or a profile the file "
                                "defines under 'profiles:' (e.g. quick)"),
    dry_run: bool = typer.Option(False, help="list the runs and stop"),
) -> None:
    """Run every point of an experiment grid; finished runs are skipped, killed ones resume."""
    from .sweep import EXECUTORS, eval_specs, expand, sweep

    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    runs = expand(file, profile=profile, out=out, device=device)
    evals = eval_specs(file, profile)
    for cfg in runs:
        typer.echo(f"{cfg.stem}.csv")
    if dry_run:
        return
    _quiet_libraries()
    failed = []
    with Progress(TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("", total=len(runs))

        def done(result) -> None:
            bar.advance(task)
            if result.error:
                failed.append(result)
                console.print(f"[red]failed[/] {result.name}: {result.error}")

        sweep(runs, workers, done, executor=executor, address=ray_address, evals=evals)
    console.print(f"{len(runs) - len(failed)} of {len(runs)} runs complete")
    if failed:
        raise typer.Exit(1)


@app.command()
def collect(
    env: str = typer.Option(..., help="environment (see `llmrl envs`)"),
    policy: str = typer.Option("expert-mix:0.5", help="random | expert-mix:EPS"),
    episodes: int = typer.Option(133, help="episodes to keep (the paper's Salad set: 133)"),
    out: Path = typer.Option(..., help="dataset file to write (JSON lines)"),
    seed: int = typer.Option(0, help="seeds the policy"),
    success_share: Optional[float] = typer.Option(
        None, help="keep this share of successful episodes (the paper's: 0.75)"),
    overwrite: bool = typer.Option(False, help="replace an existing file"),
) -> None:
    """Collect an offline dataset with a behaviour policy."""
    from .config import build_config
    from .data.collect import collect as collect_dataset

    cfg = build_config(env=env, algo="dqn")  # validates the env, and its preset's env_kwargs
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    data = collect_dataset(env, policy, episodes, seed, success_share, **cfg.env_kwargs)
    data.save(out)
    console.print(f"{len(data)} transitions, {len(data.episodes())} episodes "
                  f"({data.successful_episodes()} successful)")
    typer.echo(str(out))


dataset_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                          help="Offline datasets: import the paper's.")
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("import-paper")
def dataset_import_paper(
    path: Path = typer.Argument(..., help="the paper's pickle (value-based/overcooked_data/"
                                "*.pkl) or a clone of github.com/yanxue7/RL-LLM-Prior"),
    out: Optional[Path] = typer.Option(
        None, help="file to write (default: <cache>/datasets/paper-overcooked-salad.jsonl, "
        "which offline overcooked-salad runs use when no --dataset is given)"),
) -> None:
    """Convert the paper's Overcooked (Salad) dataset from your clone (llmrl ships no copy)."""
    from .data.paper_dataset import import_paper

    written, data = import_paper(path, out)
    typer.echo(f"wrote {written}: {len(data)} transitions, {len(data.episodes())} episodes "
               f"({data.successful_episodes()} successful)")


@app.command()
def report(
    results: Path = typer.Argument(Path("results"), help="results folder (or one experiment)"),
    out: Optional[Path] = typer.Option(None, help="where to write (default: the results folder)"),
    threshold: float = typer.Option(0.8, help="eval success that counts as solved (samples-to-"
                                    "threshold, speed-up, prior-quality curve)"),
    final_evals: int = typer.Option(1, help="offline curve: average each run's last N "
                                    "evaluations as its final return (1: the last)"),
    include_unfinished: bool = typer.Option(False, help="also report runs that have not reached "
                                            "their budget (left out and listed by default)"),
    skip_bad: bool = typer.Option(False, help="leave out CSVs that cannot be read, with a "
                                  "warning (default: stop and name them)"),
) -> None:
    """Aggregate seeds into figures and tables: report.md, CSV and LaTeX."""
    from .report import write_report

    path = write_report(results, out, threshold, final_evals, include_unfinished, skip_bad,
                        log=lambda line: typer.echo(line, err=True))
    typer.echo(f"report:  {path}")
    typer.echo(f"table:   {path.parent / 'summary.csv'}")
    for figure in sorted(path.parent.glob("curve_*_success.png")):
        typer.echo(f"figure:  {figure}")


@app.command()
def compare(
    reference: Path = typer.Argument(..., help="the recorded results folder"),
    new: Path = typer.Argument(..., help="the rerun's results folder"),
    rtol: float = typer.Option(1e-6, help="relative tolerance for numbers"),
) -> None:
    """Check that a rerun reproduces recorded results: every run CSV, value by value, except
    times and cache hits. Exit 1 when anything differs."""
    from .compare import compare_results

    matched, problems = compare_results(reference, new, rtol)
    for line in problems:
        typer.echo(f"differs: {line}")
    typer.echo(f"{matched} run file(s) match{f', {len(problems)} differ' if problems else ''}")
    if problems:
        raise typer.Exit(1)


@app.command("bench")
def bench_command(
    env: Optional[str] = typer.Option(None, help="environment (see `llmrl envs`; default: frozenlake, or the --config file's)"),
    episodes: int = typer.Option(40, help="training episodes of each mode"),
    num_envs: Optional[str] = typer.Option(None, help="ours: environments stepping together "
                                           "(default 8); several (e.g. 8,16,32) run ours once "
                                           "per count against one reference; gflan: one count "
                                           "(default: the --config file's, else 1)"),
    seed: int = typer.Option(0, help="the same seed for both modes"),
    k: int = typer.Option(5, help="proposals per state"),
    prior_model: Optional[str] = typer.Option(None, help="local prior model (default: the "
                                              "embedded SmolLM2-135M-Instruct)"),
    eval_episodes: Optional[int] = typer.Option(None, help="episodes per evaluation (default: "
                                                "the env preset's)"),
    modes: Optional[str] = typer.Option(None, help="which modes to run, comma-separated "
                                        "(dqn-prior: reference,ours; gflan: padded,tree)"),
    algo: str = typer.Option("dqn-prior", help="dqn-prior (the paper's pattern against ours), "
                             "gflan or gflan-prior (GFlan's scoring paths)"),
    config: Optional[Path] = typer.Option(None, help="gflan: YAML file of the run's settings, "
                                          "e.g. experiments/gflan.yaml"),
    updates: int = typer.Option(1, help="gflan: rollouts, each with its PPO update, per mode"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
    out: Optional[Path] = typer.Option(None, help="keep each mode's run (CSV, config) under "
                                       "this folder, for `llmrl report` (default: a temporary "
                                       "folder, removed)"),
    run_ahead: Optional[int] = typer.Option(None, help="ours: batch steps an env with a new "
                                            "prompt may wait while the others step on from the "
                                            "cache (default: the run setting's, 0 = lockstep); "
                                            "the reference is always lockstep"),
    reference_stop: str = typer.Option("newline", help="when the reference's generate stops: "
                                       "newline (every sample has one; kinder) | paper (the "
                                       "paper's stop words <END>, <eos>, end-of-text)"),
) -> None:
    """Time the paper code's pattern and ours on the same dqn-prior budget, side by side; with
    --algo gflan, GFlan's token-tree scoring beside the padded path before it."""
    import json

    from .bench import MODES, bench, check_reference_stop
    from .config import build_config

    if algo in ("gflan", "gflan-prior"):
        _bench_gflan(env, algo, config, num_envs, seed, prior_model, modes, device, updates,
                     json_out)
        return
    if algo != "dqn-prior":
        raise UserError(f"llmrl bench times dqn-prior, gflan or gflan-prior, not {algo!r}")
    modes = modes or "reference,ours"
    chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
    bad = [m for m in chosen if m not in MODES]
    if bad or not chosen:
        raise UserError(f"unknown bench mode(s) {', '.join(bad) or repr(modes)}; choose from: "
                        f"{', '.join(MODES)}")
    check_reference_stop(reference_stop)  # before the progress bars start
    num_envs = num_envs or "8"
    try:
        counts = [int(n) for n in num_envs.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise UserError(f"--num-envs must be one or more positive integers, comma-separated; "
                        f"got {num_envs!r}")
    agent = {"eval_episodes": eval_episodes} if eval_episodes is not None else None
    cfg = build_config(None, env=env or "frozenlake", algo="dqn-prior", prior="local",
                       episodes=episodes,
                       num_envs=counts[0], seed=seed, k=k, prior_model=prior_model,
                       device=device, agent=agent, run_ahead=run_ahead,
                       prior_draws="memo")  # the reference pattern memoises (bench.py)
    _quiet_libraries()
    with Progress(TextColumn("{task.fields[mode]:9s} episodes"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        def progress_for(mode):
            task = bar.add_task("", total=cfg.episodes, mode=mode)
            return lambda done, total, msg: bar.update(task, completed=done)

        result = bench(cfg, chosen, progress_for, scratch=out, more_num_envs=tuple(counts[1:]),
                       reference_stop=reference_stop)
    if json_out:
        typer.echo(json.dumps(result))
        return
    _print_bench(result)


def _bench_gflan(env: Optional[str], algo: str, config: Optional[Path],
                 num_envs: Optional[str], seed: int,
                 prior_model: Optional[str], modes: Optional[str], device: Optional[str],
                 updates: int, json_out: bool) -> None:
    import json

    from .bench_gflan import MODES, bench_gflan
    from .config import build_config, load_yaml

    chosen = tuple(m.strip() for m in (modes or "padded,tree").split(",") if m.strip())
    bad = [m for m in chosen if m not in MODES]
    if bad or not chosen:
        raise UserError(f"unknown gflan bench mode(s) {', '.join(bad) or repr(modes)}; choose "
                        f"from: {', '.join(MODES)}")
    if updates < 1:
        raise UserError(f"--updates must be >= 1, got {updates}")
    if num_envs is not None and (not num_envs.isdigit() or int(num_envs) < 1):
        raise UserError(f"--num-envs must be one positive integer with --algo {algo}; "
                        f"got {num_envs!r}")
    data = load_yaml(config) if config else {}
    for key in ("sweep", "profiles", "experiment"):
        data.pop(key, None)
    cfg = build_config(data, env=env or data.get("env", "frozenlake"), algo=algo, seed=seed,
                       num_envs=int(num_envs) if num_envs else None, prior_model=prior_model,
                       device=device)
    _quiet_libraries()
    result = bench_gflan(cfg, chosen, updates, log=lambda m: console.print(m) if not json_out
                         else None)
    if json_out:
        typer.echo(json.dumps(result))
        return
    from rich.table import Table

    table = Table(title=f"llmrl bench: {result['env']} × {algo} × {result['model']}, "
                        f"{result['num_envs']} env(s), {updates} rollout(s) of "
                        f"{result['rollout_steps']} transitions, minibatch "
                        f"{result['minibatch_size']} × {result['epochs']} epochs, seed {seed}",
                  title_justify="left")
    rows = [("env steps", "env_steps", "{:,}"), ("wall s", "wall_s", "{:.1f}"),
            ("env steps / s", "steps_per_s", "{:.3f}"), ("  acting forwards s", "acting_s",
                                                        "{:.1f}"),
            ("  env s", "env_s", "{:.2f}"), ("  PPO updates s", "update_s", "{:.1f}"),
            ("gradient steps", "grad_steps", "{}"), ("s / gradient step", "grad_step_s",
                                                    "{:.2f}"),
            ("  the first", "first_grad_step_s", "{:.2f}"),
            ("  the slowest", "slowest_grad_step_s", "{:.2f}"),
            ("first minibatch's loss", "first_loss", "{:.5f}"),
            ("peak RSS MB", "peak_rss_mb", "{:,}")]
    modes_out = result["modes"]
    if any("peak_cuda_mb" in m for m in modes_out.values()):
        rows.append(("peak CUDA MB", "peak_cuda_mb", "{:,}"))
    out = _print_modes_table(table, rows, modes_out)
    host = result["host"]
    out.print(f"host: {host['cpu']}, {host['cores']} cores, {host['threads']} threads, torch "
              f"{host['torch']}" + (f", GPU {host['gpu']}" if "gpu" in host else ""))
    for what, ratio in result.get("speedups", {}).items():
        out.print(f"{chosen[0]} / {chosen[-1]} ({what.replace('_', ' ')}): {ratio:.2f}x")


def _print_modes_table(table, rows: list[tuple[str, str, str]], modes: dict) -> Console:
    """Print ``table`` with a column per bench mode and a row per (label, key, format); the
    console, for the lines after it."""
    table.add_column("")
    for mode in modes:
        table.add_column(mode, justify="right")
    for label, key, fmt in rows:
        table.add_row(label, *[fmt.format(modes[m][key]) for m in modes])
    out = Console()
    out.print(table)
    return out


def _print_bench(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"llmrl bench: {result['env']} × dqn-prior × {result['model']} "
                        f"(k={result['k']}), {result['episodes']} episodes, seed {result['seed']}"
                        f", reference stops at: {result['reference_stop']}",
                  title_justify="left")
    rows = [("envs stepping together", "num_envs", "{}"),
            ("  run ahead (steps)", "run_ahead", "{}"), ("env steps", "env_steps", "{:,}"),
            ("wall s", "wall_s", "{:.1f}"), ("env steps / s", "steps_per_s", "{:.3f}"),
            ("prior s", "prior_s", "{:.1f}"), ("encoder s", "encoder_s", "{:.1f}"),
            ("Q update s", "update_s", "{:.1f}"), ("env s", "env_s", "{:.2f}"),
            ("prior queries", "llm_queries", "{:,}"), ("  sent to the model", "llm_model_queries",
                                                        "{:,}"),
            ("  cache hit rate", "prior_hit_rate", "{:.0%}"),
            ("prompt tokens prefilled", "prompt_tokens", "{:,}"),
            ("  reused from the prefix cache", "reused_tokens", "{:,}"),
            ("encoder texts", "encoder_texts", "{:,}"),
            ("  cache hit rate", "encoder_hit_rate", "{:.0%}"),
            ("peak RSS MB", "peak_rss_mb", "{:,.0f}"), ("final eval success", "eval_success",
                                                        "{:.2f}"),
            ("final eval return", "eval_return", "{:.3f}")]
    out = _print_modes_table(table, rows, result["modes"])
    host = result["host"]
    out.print(f"host: {host['cpu']} ({host.get('cpu_family_model', '?')}), "
              f"{host['cores']} cores, {host['threads']} threads, flags "
              f"{' '.join(host.get('cpu_flags', [])) or '-'}, torch {host['torch']}"
              + (f", GPU {host['gpu']}" if "gpu" in host else ""))
    for count, speedup in result.get("speedups", {}).items():
        out.print(f"speed-up (env steps / s, ours with {count} envs over reference): "
                  f"{speedup:.1f}x")


@app.command()
def prompt(
    env: str = typer.Option("frozenlake", help="environment (see `llmrl envs`)"),
    seed: int = typer.Option(0, help="the run seed whose first training episode to show"),
    steps: int = typer.Option(3, help="how many states to show"),
    algo: str = typer.Option("dqn-prior", help="the algo whose settings apply (history length)"),
    config: Optional[Path] = typer.Option(None, help="YAML file of settings"),
) -> None:
    """Print the exact prompts the prior sees for the first states of a seeded episode, and
    the Q-network's input text for one candidate (the action taken: the expert's, else the
    first admissible one)."""
    from .config import build_config, load_yaml
    from .prompt_walk import walk

    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    cfg = build_config(load_yaml(config) if config else None, env=env, seed=seed, algo=algo)
    for item in walk(cfg, steps):
        typer.echo(f"===== state {item.step}: prompt "
                   f"({cfg.env}, {cfg.algo}, seed {cfg.seed}, history {cfg.history_length}) =====")
        typer.echo(item.prompt)
        typer.echo(f"----- Q-network input for the candidate {item.action!r} -----")
        typer.echo(item.q_input)


@app.command()
def envs() -> None:
    """List the environments."""
    from .envs import REGISTRY

    typer.echo(f"{'name':20s} {'actions':9s} {'expert':7s} description")
    for name, (cls, text) in REGISTRY.items():
        typer.echo(f"{name:20s} {cls.action_count:9s} {'yes' if cls.has_expert() else 'no':7s} "
                   f"{text}")


@app.command()
def priors() -> None:
    """List the prior backends and their options."""
    from .priors import PRIORS

    for name, text in PRIORS.items():
        typer.echo(f"{name:15s} {text}")


config_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                         help="Resolved run settings.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    env: str = typer.Option("frozenlake", help="environment (see `llmrl envs`)"),
    algo: str = typer.Option("dqn-prior", help="algorithm"),
    prior: Optional[str] = typer.Option(None, help="prior (see `llmrl priors`)"),
    config: Optional[Path] = typer.Option(None, help="a YAML of settings, as `llmrl run --config`"),
    explain: bool = typer.Option(False, help="also print what each setting means, and its unit"),
) -> None:
    """Print the settings a run of ENV x ALGO would use, each with where it comes from (its
    default, the env's preset, the YAML file or a flag) and the paper's value."""
    from .config import CONCERNS, RunConfig, build_config, load_yaml
    from .settings import documented

    sources: dict[str, str] = {}
    cfg = build_config(load_yaml(config) if config else None, sources=sources, env=env,
                       algo=algo, prior=prior)
    docs = documented(RunConfig)
    groups = {concern: [(name, getattr(cfg, name), docs[name]) for name in names]
              for concern, names in CONCERNS.items() if concern != "agent"}
    groups["agent"] = [(f"agent.{name}", getattr(cfg.agent, name), doc)
                       for name, doc in documented(type(cfg.agent)).items()]
    width = max(len(name) for rows in groups.values() for name, _, _ in rows)
    typer.echo(f"{'setting':<{width}}  {'value':<24}  {'source':<16}  paper")
    for concern, rows in groups.items():
        typer.echo(f"# {concern}")
        for name, value, doc in rows:
            typer.echo(f"{name:<{width}}  {value!r:<24}  {sources.get(name, 'default'):<16}  "
                       f"{doc['paper'] or '-'}".rstrip())
            if explain:
                unit = f" [{doc['unit']}]" if doc["unit"] else ""
                typer.echo(f"{'':<{width}}  {doc['doc']}{unit}")


@prior_app.command("export")
def prior_export(out: Path = typer.Option(..., help="folder to write the HF model into")) -> None:
    """Write the embedded SmolLM2-135M-Instruct as a normal Hugging Face folder."""
    _quiet_libraries()
    from .engine import embedded_gguf, export_gguf

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose an empty or new folder")
    typer.echo(str(export_gguf(embedded_gguf(), out)))


@prior_app.command("probe")
def prior_probe(
    env: str = typer.Option("frozenlake", help="environment (see `llmrl envs`)"),
    prior: Optional[list[str]] = typer.Option(
        None, help="BACKEND[:MODE] to probe, repeatable: local:sample, local:score, "
        "vllm:sample, vllm:score, uniform, expert-mix:EPS (default: local sample and score, "
        "expert-mix:0.5, and vllm sample and score when --prior-url is given)"),
    states: int = typer.Option(8, help="how many states to probe"),
    show: int = typer.Option(4, help="how many of them to print action by action"),
    k: int = typer.Option(5, help="proposals per state"),
    seed: int = typer.Option(0, help="picks the states and seeds the priors"),
    prior_model: Optional[str] = typer.Option(None, help="as for `llmrl run`"),
    prior_url: Optional[str] = typer.Option(None, help="vllm server; adds vllm to the default"),
    prior_permutations: Optional[int] = typer.Option(None, help="score mode orderings (1)"),
    projection: Optional[str] = typer.Option(None, help="sample mode: default | paper"),
    chat_template: Optional[bool] = typer.Option(None, "--chat-template/--no-chat-template",
                                                 help="local: wrap prompts in the chat template"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    batch: int = typer.Option(16, help="states per prior call (latency is per call)"),
    csv: Optional[Path] = typer.Option(None, help="also write per-state results to this CSV"),
) -> None:
    """Show each prior's proposals and probabilities beside the admissible actions."""
    from .config import build_config
    from .devices import resolve_device
    from .priors import make_prior
    from .priors.probe import parse_probe_spec, probe_prior, probe_states

    specs = prior or ["local:sample", "local:score", "expert-mix:0.5"] + (
        ["vllm:sample", "vllm:score"] if prior_url else [])
    configs = []
    for spec in specs:
        backend, mode = parse_probe_spec(spec)
        permutations = prior_permutations if mode == "score" else None
        configs.append((spec, build_config(
            env=env, algo="dqn-prior", prior=backend, prior_mode=mode, k=k, seed=seed,
            prior_model=prior_model, prior_url=prior_url if backend == "vllm" else None,
            prior_permutations=permutations, projection=projection, device=device,
            chat_template=chat_template if backend == "local" else None, prior_cache=False)))
    if states < 1 or batch < 1:
        raise UserError("--states and --batch must be >= 1")
    _quiet_libraries()
    queries = probe_states(env, states, seed, **configs[0][1].env_kwargs)
    results = []
    for spec, cfg in configs:
        console.print(f"probing {spec} on {len(queries)} states ...")
        prior_obj = make_prior(cfg, str(resolve_device(cfg.device)))
        results.append(probe_prior(spec, prior_obj, queries, k, batch))
    _print_probe(queries[:show], results, k)
    _print_probe_summary(queries, results, batch)
    if csv is not None:
        import pandas as pd

        rows = []
        for r in results:
            for i, (q, p_opt, hit) in enumerate(zip(queries, r.p_optimal(queries),
                                                    r.optimal_in_k(queries))):
                rows.append({"prior": r.label, "state": i, "observation": q.prompt,
                             "actions": "|".join(q.actions), "optimal": "|".join(q.optimal),
                             "probs": "|".join(f"{p:.4f}" for p in r.probs[i]),
                             "proposals": "|".join(r.proposals[i]), "p_optimal": p_opt,
                             "optimal_in_k": hit})
        csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(csv, index=False)
        typer.echo(str(csv))


@alfworld_app.command("generate")
def alfworld_generate(
    out: Path = typer.Option(..., help="folder to write json_2.1.1/{train,valid_unseen} into"),
    n: int = typer.Option(36, help="games per split"),
    seed: int = typer.Option(0, help="the same seed writes the same games"),
    horizon: int = typer.Option(50, help="keep a game only if the expert solves it in this many "
                                "steps"),
) -> None:
    """Write pick-and-place games in ALFWorld's official layout, each solved by its expert."""
    from .envs.alfworld_gen import generate

    if n < 1 or seed < 0 or horizon < 1:
        raise UserError(f"--n and --horizon must be >= 1 and --seed >= 0 (got --n {n}, "
                        f"--seed {seed}, --horizon {horizon})")
    if (out / "json_2.1.1").exists():
        raise UserError(f"{out / 'json_2.1.1'} exists; choose a new --out folder")
    with Progress(TextColumn("games"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("", total=2 * n)
        written = generate(out, n, seed, horizon=horizon,
                           progress=lambda done, total: bar.update(task, completed=done))
    for split, files in written.items():
        console.print(f"{split}: {len(files)} games")
    typer.echo(str(out))


def _print_probe(queries, results, k: int, top: int = 6) -> None:
    """Per state: each prior's most likely actions, with p and how often among the k."""
    from rich.table import Table

    out = Console()
    for i, q in enumerate(queries):
        current = q.prompt.split("Current Observation: ", 1)[-1].split("\n", 1)[0]
        table = Table(title=f"state {i}: {current}\nadmissible: {', '.join(q.actions)}; "
                      f"optimal (*): {', '.join(q.optimal)}", title_justify="left")
        table.add_column("prior")
        table.add_column("p(optimal)", justify="right")
        table.add_column(f"actions by p (times among the {k} proposals)")
        for r in results:
            ranked = sorted(zip(q.actions, r.probs[i]), key=lambda item: -item[1])[:top]
            cells = [f"{a}{'*' if a in q.optimal else ''} {p:.2f} ({r.proposals[i].count(a)})"
                     for a, p in ranked]
            table.add_row(r.label, f"{r.p_optimal(queries)[i]:.2f}", "  ".join(cells))
        out.print(table)


def _print_probe_summary(queries, results, batch: int) -> None:
    from rich.table import Table

    table = Table(title=f"prior quality over {len(queries)} states", title_justify="left")
    for name in ("prior", "p(optimal) mean", "optimal in k", "unmatched texts",
                 f"s per call of ≤{batch} states"):
        table.add_column(name, justify="right" if name != "prior" else "left")
    for r in results:
        p_opt, hits = r.p_optimal(queries), r.optimal_in_k(queries)
        table.add_row(r.label, f"{sum(p_opt) / len(p_opt):.3f}",
                      f"{sum(hits)}/{len(hits)}",
                      f"{r.unmatched}/{sum(map(len, r.proposals))}",
                      f"{sum(r.batch_seconds) / len(r.batch_seconds):.3f}")
    Console().print(table)


#: the commands whose work a Ctrl-C leaves to resume (runs checkpoint as they go)
RESUMABLE = ("run", "sweep")


def _interrupted(argv: list[str] | None) -> None:
    """The one line after a Ctrl-C: for a run or sweep, how to resume it."""
    command = (sys.argv[1:] if argv is None else argv)[:1]
    hint = (" (start the same command again: it resumes from the last checkpoint)"
            if command and command[0] in RESUMABLE else "")
    print(f"llmrl: interrupted{hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        code = app(args=argv, prog_name="llmrl", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into Exit(130)
            _interrupted(argv)
        if isinstance(code, int) and code:  # a command's typer.Exit(code), returned by click
            sys.exit(code)
    except UserError as exc:
        print(f"llmrl: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except click_exceptions.NoSuchOption as exc:
        options = sorted(o for p in (exc.ctx.command.params if exc.ctx else []) for o in p.opts)
        hint = f"; valid options: {', '.join(options)}" if options else ""
        print(f"llmrl: error: no such option: {exc.option_name}{hint}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.BadParameter as exc:
        param = exc.param
        name = param.opts[0] if param is not None and param.opts else "a parameter"
        if isinstance(exc, click_exceptions.MissingParameter) and param is not None:
            # its message is empty: say which argument or option is missing, and where help is
            where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
            print(f"llmrl: error: missing {param.param_type_name} {name}{where}", file=sys.stderr)
        else:
            print(f"llmrl: error: bad value for {name}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.UsageError as exc:
        print(f"llmrl: error: {exc.format_message()}".replace("\n", " "), file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("llmrl: aborted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`)
        sys.stderr.close()
        sys.exit(0)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"llmrl: error: no space left on the device{where}; free some and start the same "
              "command again (a run resumes from its last checkpoint)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted(argv)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
