"""The ``llmrl`` command line: run, report, envs, priors, prior export."""

from __future__ import annotations

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
    algo: Optional[str] = typer.Option(None, help="dqn | dqn-prior"),
    prior: Optional[str] = typer.Option(None, help="uniform | local (see `llmrl priors`)"),
    prior_model: Optional[str] = typer.Option(None, help="local model folder or .gguf file"),
    prior_mode: Optional[str] = typer.Option(None, help="sample"),
    prior_uniform_mix: Optional[float] = typer.Option(
        None, help="smooth the prior: (1-EPS)*p_LLM + EPS*uniform (default 0, off)"),
    projection: Optional[str] = typer.Option(None, help="default | paper"),
    chat_template: Optional[bool] = typer.Option(None, "--chat-template/--no-chat-template",
                                                 help="wrap prompts in the model's chat template"),
    temperature: Optional[float] = typer.Option(None, help="prior sampling temperature (1.0)"),
    top_p: Optional[float] = typer.Option(None, help="prior nucleus sampling (1.0)"),
    k: Optional[int] = typer.Option(None, help="proposals per state (5)"),
    episodes: Optional[int] = typer.Option(None, help="training episodes"),
    seed: Optional[int] = typer.Option(None, help="drives env, torch, numpy and prior sampling"),
    num_envs: Optional[int] = typer.Option(None, help="environments stepping together"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    encoder: Optional[str] = typer.Option(None, help="encoder folder (default all-MiniLM-L6-v2)"),
    experiment: Optional[str] = typer.Option(None, help="results sub-folder name (default)"),
    out: Optional[str] = typer.Option(None, help="results root folder (results)"),
    config: Optional[Path] = typer.Option(None, help="YAML file of settings"),
    prior_cache: Optional[bool] = typer.Option(None, "--prior-cache/--no-prior-cache",
                                               help="persistent proposal cache (on)"),
    overwrite: bool = typer.Option(False, help="replace existing results of this run"),
) -> None:
    """Train one agent: env x algo x prior x seed -> CSV, config and checkpoint."""
    from .config import build_config, load_yaml

    flags = dict(env=env, algo=algo, prior=prior, prior_model=prior_model, prior_mode=prior_mode,
                 prior_uniform_mix=prior_uniform_mix, projection=projection,
                 chat_template=chat_template, temperature=temperature, top_p=top_p, k=k,
                 episodes=episodes, seed=seed, num_envs=num_envs, device=device, encoder=encoder,
                 experiment=experiment, out=out, prior_cache=prior_cache)
    cfg = build_config(load_yaml(config) if config else None, **flags)
    _quiet_libraries()
    from .runner import Runner

    console.print(f"[bold]llmrl run[/] {cfg.env} × {cfg.algo} × prior {cfg.prior_label} "
                  f"(k={cfg.k}) seed {cfg.seed} → {cfg.stem}.csv")
    with Progress(TextColumn("episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("", total=cfg.episodes)
        runner = Runner(cfg, overwrite=overwrite, log=console.print,
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
def report(
    results: Path = typer.Argument(Path("results"), help="results folder (or one experiment)"),
    out: Optional[Path] = typer.Option(None, help="where to write (default: the results folder)"),
) -> None:
    """Aggregate seeds into learning curves (PNG) and a table (markdown, CSV)."""
    from .report import write_report

    path = write_report(results, out)
    typer.echo(str(path))


@app.command()
def envs() -> None:
    """List the environments."""
    from .envs import REGISTRY

    for name, (_, text) in REGISTRY.items():
        typer.echo(f"{name:20s} {text}")


@app.command()
def priors() -> None:
    """List the prior backends and their options."""
    from .priors import PRIORS

    for name, text in PRIORS.items():
        typer.echo(f"{name:10s} {text}")


@prior_app.command("export")
def prior_export(out: Path = typer.Option(..., help="folder to write the HF model into")) -> None:
    """Write the embedded SmolLM2-135M-Instruct as a normal Hugging Face folder."""
    _quiet_libraries()
    from .priors.local import export_embedded

    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose an empty or new folder")
    typer.echo(str(export_embedded(out)))


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="llmrl", standalone_mode=False)
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
        name = exc.param.opts[0] if exc.param is not None and exc.param.opts else "a parameter"
        print(f"llmrl: error: bad value for {name}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except click_exceptions.UsageError as exc:
        print(f"llmrl: error: {exc.format_message()}".replace("\n", " "), file=sys.stderr)
        sys.exit(2)
    except click_exceptions.Abort:
        print("llmrl: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("llmrl: interrupted (the run resumes from its last checkpoint)", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
