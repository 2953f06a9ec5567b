"""Per-seed CSVs -> learning-curve figure (mean and 95% confidence band) and summary table."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd

from .algos import ALGORITHMS, names
from .errors import UserError

GROUP = ["experiment", "env", "algo", "prior"]
#: "episodes to" a success rate: the sample-efficiency figure of the summary table
SOLVED = 0.8
def _t_central_mass(t: float, dof: int) -> float:
    """P(|T| < t) for Student's t with an integer number of degrees of freedom.

    The closed form for integer ``dof`` (Abramowitz & Stegun 26.7.3-4): with
    theta = atan(t / sqrt(dof)), a finite series in cos(theta)^2.
    """
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2 == 1:  # 2/pi * (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...)), dof-3 terms
        term, total = 1.0, 1.0 if dof > 1 else 0.0
        for j in range(1, (dof - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0  # sin * (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...), dof-2 terms
    for j in range(1, dof // 2):
        term *= c2 * (2 * j - 1) / (2 * j)
        total += term
    return math.sin(theta) * total


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile (t such that P(|T| < t) = 0.95); NaN for dof < 1."""
    if dof < 1:
        return float("nan")
    low, high = 0.0, 20.0  # t95(1) = 12.706 is the largest
    for _ in range(100):  # bisection to float precision
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central_mass(mid, dof) < 0.95 else (low, mid)
    return (low + high) / 2


def ci95(values: pd.Series) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t); NaN for one seed."""
    n = int(values.count())
    return t95(n - 1) * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")


def is_run_file(path: Path, suffix: str) -> bool:
    """Whether ``path`` is a run's ``seed_<n><suffix>`` in its algo folder: not a file a resume
    kept aside (``seed_<n>.changed.csv``) nor one ``--overwrite`` moved to ``replaced/``."""
    return (re.fullmatch(rf"seed_\d+{re.escape(suffix)}", path.name) is not None
            and path.parent.parent.name != "replaced")


#: the columns a run's CSV must have for the report to read it
NEEDED = ["env", "algo", "prior", "seed", "episode", "env_steps", "eval_return", "eval_success"]


def read_run_csv(path: Path) -> pd.DataFrame:
    """One run's rows, with its ``budget`` (episodes, or gradient steps offline, from the
    ``seed_<n>.yaml`` beside it) and whether it ``finished`` (reached that budget); a CSV the
    report cannot use is one UserError naming it."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be read ({str(exc).strip().splitlines()[0]})") from None
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}")
    for column in ("episode", "env_steps", "eval_return", "eval_success"):
        values = pd.to_numeric(df[column], errors="coerce")
        if values.isna().any():
            raise UserError(f"{path} has a row whose {column} is not a number (a row cut short?)")
        df[column] = values
    budget = _budget(path.with_suffix(".yaml"))
    last = int(df["episode"].max()) if len(df) else 0
    df["budget"] = budget if budget is not None else last
    df["finished"] = budget is None or last >= budget
    return df


def _budget(yaml_path: Path) -> int | None:
    """The run's budget from its resolved config: ``agent.grad_steps`` for an offline algo,
    else ``episodes`` (None without a readable config)."""
    import yaml

    try:
        cfg = yaml.safe_load(yaml_path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(cfg, dict):
        return None
    spec = ALGORITHMS.get(cfg.get("algo"))
    if spec is not None and spec.offline:
        steps = (cfg.get("agent") or {}).get("grad_steps")
        return int(steps) if isinstance(steps, int) else None
    return int(cfg["episodes"]) if isinstance(cfg.get("episodes"), int) else None


def load_results(root: Path, skip_bad: bool = False, log=print) -> pd.DataFrame:
    """All ``<experiment>/<env>/<algo>/seed_<n>.csv`` under ``root`` (root may be one experiment),
    with each run's ``budget`` and ``finished``. A CSV that cannot be used stops the report
    with one line naming it, or under ``skip_bad`` is left out with a warning."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results folder {str(root)!r} does not exist")
    frames = []
    for path in sorted(root.rglob("seed_*.csv")):
        if not is_run_file(path, ".csv"):  # evaluations (load_evals), kept-aside files
            continue
        try:
            df = read_run_csv(path)
        except UserError as exc:
            if not skip_bad:
                raise UserError(f"{exc}; fix or remove it, or pass --skip-bad to leave it out"
                                ) from None
            log(f"warning: left out {exc}")
            continue
        if df.empty:
            continue
        df["experiment"] = path.parent.parent.parent.name
        frames.append(df)
    if not frames:
        raise UserError(f"no seed_<n>.csv files under {str(root)!r}; run `llmrl run` first")
    return pd.concat(frames, ignore_index=True)


def finished_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows of finished runs, and a line per unfinished one (left out)."""
    unfinished = df[~df["finished"].astype(bool)]
    lines = [f"{r.experiment}/{r.env}/{r.algo} seed {r.seed}: at {int(r.episode)} of "
             f"{int(r.budget)}" for r in unfinished.sort_values("episode").groupby(
                 ["experiment", "env", "algo", "seed"], as_index=False).tail(1).itertuples()]
    return df[df["finished"].astype(bool)], sorted(lines)


def split_budgets(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Seeds of one group with different budgets become separate rows (their experiment
    labelled with the budget) instead of one average; a line per group split."""
    df = df.copy()
    lines = []
    for key, g in df.groupby(GROUP):
        budgets = sorted(g["budget"].unique())
        if len(budgets) > 1:
            index = g.index
            df.loc[index, "experiment"] = [f"{e} (budget {int(b)})" for e, b in
                                           zip(g["experiment"], g["budget"])]
            lines.append(f"{'/'.join(map(str, key))}: budgets "
                         f"{', '.join(str(int(b)) for b in budgets)}, shown apart")
    return df, lines


def base_algo(algo: str) -> str | None:
    """The baseline an algo is compared with (dqn-prior -> dqn), or None for a baseline."""
    spec = ALGORITHMS.get(algo)
    return spec.baseline if spec else None


def _first_reaching(rows: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per seed, the first eval row with success >= threshold (seeds that never do: absent)."""
    hit = rows[rows["eval_success"] >= threshold].sort_values("episode")
    return hit.groupby("seed").head(1).set_index("seed")


#: the ``dataset`` of offline runs whose CSVs were written before llmrl recorded it
NOT_RECORDED = "not recorded"
DATASETS_NOTE = ("`dataset`: what an offline row trained on: `paper` (the paper's, imported "
                 "with `llmrl dataset import-paper`), `collected:<policy>` (collected by llmrl), "
                 "or the `--dataset` file's name; `not recorded` for CSVs written before llmrl "
                 "recorded it.")


def dataset_column(df: pd.DataFrame) -> pd.Series:
    """Each row's dataset label (CSV column ``dataset``), ``NOT_RECORDED`` where it is absent."""
    if "dataset" not in df:
        return pd.Series(NOT_RECORDED, index=df.index, dtype=object)
    return df["dataset"].map(lambda v: NOT_RECORDED if pd.isna(v) or v == "" else str(v))


def _datasets(g: pd.DataFrame, algo: str) -> str:
    """The datasets a group's runs trained on ("" for online algos)."""
    return ", ".join(sorted(set(dataset_column(g)))) if algo in OFFLINE else ""


def shows_datasets(table: pd.DataFrame) -> bool:
    """Whether a table gets a ``dataset`` column: some row recorded its dataset (reports of
    online runs, or of CSVs from before the column, look as they did)."""
    return "dataset" in table and bool((~table["dataset"].isin(["", NOT_RECORDED])).any())


def summary_table(df: pd.DataFrame, threshold: float = SOLVED) -> pd.DataFrame:
    """Final eval point of each seed, aggregated per group, with samples to ``threshold``.
    ``dataset``: for offline groups, which dataset(s) their seeds trained on."""
    last = df.sort_values("episode").groupby(GROUP + ["seed"], as_index=False).tail(1)
    rows = []
    for key, g in last.groupby(GROUP):
        all_rows = df.merge(g[GROUP + ["seed"]], on=GROUP + ["seed"])
        queries = g["llm_calls"] + g["llm_cache_hits"]
        reached = _first_reaching(all_rows, threshold)
        optimal = g["prior_optimal_rate"] if "prior_optimal_rate" in g else pd.Series(dtype=float)
        prior_s = g["prior_seconds"] if "prior_seconds" in g else pd.Series(dtype=float)
        rows.append({
            **dict(zip(GROUP, key)),
            "dataset": _datasets(g, key[2]),
            "seeds": int(g["seed"].nunique()),
            "episodes": int(g["episode"].max()),
            "env_steps": float(g["env_steps"].mean()),
            "success_mean": float(g["eval_success"].mean()),
            "success_std": float(g["eval_success"].std(ddof=1)) if len(g) > 1 else 0.0,
            "success_ci95": ci95(g["eval_success"]),
            "return_mean": float(g["eval_return"].mean()),
            "return_std": float(g["eval_return"].std(ddof=1)) if len(g) > 1 else 0.0,
            "return_ci95": ci95(g["eval_return"]),
            "best_success_mean": float(all_rows.groupby("seed")["eval_success"].max().mean()),
            # first eval point with success >= threshold, over the seeds that got there
            "threshold": threshold,
            "episodes_to_solved_mean": float(reached["episode"].mean())
            if len(reached) else float("nan"),
            "env_steps_to_solved_mean": float(reached["env_steps"].mean())
            if len(reached) else float("nan"),
            "seeds_solved": int(len(reached)),
            # share of visited training states whose k proposals held an optimal action
            "optimal_in_k_mean": float(pd.to_numeric(optimal, errors="coerce").mean()),
            "wall_s_mean": float(g["wall_s"].mean()),
            "llm_calls_mean": float(g["llm_calls"].mean()),
            "llm_cache_hit_rate": float(g["llm_cache_hits"].sum() / queries.sum())
            if queries.sum() else float("nan"),
            "prior_seconds_mean": float(pd.to_numeric(prior_s, errors="coerce").mean()),
        })
    table = pd.DataFrame(rows)
    if not table.empty:
        table["speedup"] = [_speedup(table, r) for r in table.itertuples()]
    return table


def _baseline_row(table: pd.DataFrame, env: str, algo: str, experiment: str, dataset: str = ""):
    """The baseline group for (env, algo): same env and dataset (offline), base algo, the
    experiment name sharing the longest prefix with ``experiment`` (sweeps name prior runs
    ``<experiment>-<prior>``)."""
    base = base_algo(algo)
    if base is None:
        return None
    cands = table[(table["env"] == env) & (table["algo"] == base)]
    if "dataset" in cands:
        cands = cands[cands["dataset"] == dataset]
    if cands.empty:
        return None
    shared = [len(os.path.commonprefix([experiment, e])) for e in cands["experiment"]]
    return cands.iloc[max(range(len(shared)), key=shared.__getitem__)]


def _speedup(table: pd.DataFrame, r) -> float:
    """Baseline env steps to the threshold / this group's (NaN unless both got there)."""
    base = _baseline_row(table, r.env, r.algo, r.experiment, getattr(r, "dataset", ""))
    if base is None or not base["env_steps_to_solved_mean"] >= 0 \
            or not r.env_steps_to_solved_mean >= 0:
        return float("nan")
    if r.env_steps_to_solved_mean == 0:  # solved before any training: the prior alone
        return float("inf")
    return float(base["env_steps_to_solved_mean"] / r.env_steps_to_solved_mean)


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per group and eval point: mean env steps, mean/CI of eval success and return."""
    out = []
    for key, g in df.groupby(GROUP + ["episode"]):
        out.append({
            **dict(zip(GROUP + ["episode"], key)), "seeds": int(g["seed"].nunique()),
            "env_steps": float(g["env_steps"].mean()),
            "success_mean": float(g["eval_success"].mean()), "success_ci95": ci95(g["eval_success"]),
            "return_mean": float(g["eval_return"].mean()), "return_ci95": ci95(g["eval_return"]),
        })
    return pd.DataFrame(out).sort_values(GROUP + ["episode"])


def _save(fig, ax, path: Path) -> Path:
    """Grid, legend, tight layout; write the PNG and close the figure."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(curve: pd.DataFrame, out: Path, metric: str = "success") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env, g_env in curve.groupby("env"):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        # name the experiment only where an algo and prior appear in more than one
        experiments = g_env.groupby(["algo", "prior"])["experiment"].nunique()
        for key, g in g_env.groupby(["experiment", "algo", "prior"]):
            label = f"{key[1]} ({key[2]})"
            if key[0] != "default" and experiments[(key[1], key[2])] > 1:
                label += f" [{key[0]}]"
            mean, half = g[f"{metric}_mean"], g[f"{metric}_ci95"].fillna(0.0)
            ax.plot(g["env_steps"], mean, marker="o", ms=3, label=f"{label}, n={g['seeds'].max()}")
            low, high = mean - half, mean + half
            if metric == "success":  # a rate: the band cannot leave [0, 1]
                low, high = low.clip(0.0, 1.0), high.clip(0.0, 1.0)
            ax.fill_between(g["env_steps"], low, high, alpha=0.2)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"eval {metric}")
        if metric == "success":
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{env}: eval {metric} (mean, 95% CI over seeds)")
        paths.append(_save(fig, ax, out / f"curve_{env}_{metric}.png"))
    return paths


#: offline algos (their runs' env_steps = dataset transitions trained on)
OFFLINE = names("offline")
#: the share of full-data performance that defines "enough data" in the offline table
ENOUGH = 0.9
#: an offline curve: one per env, algo, prior and the dataset its sizes are drawn from
OFFLINE_KEY = ["env", "algo", "prior", "dataset"]


def offline_curve(df: pd.DataFrame, final_evals: int = 1) -> pd.DataFrame:
    """Final eval return per offline (env, algo, prior, dataset size), over seeds. A run's final
    return is the mean of its last ``final_evals`` evaluations (1: the last one)."""
    off = df[df["algo"].isin(OFFLINE)]
    if off.empty:
        return pd.DataFrame()
    off = off.assign(dataset=dataset_column(off))
    tail = off.sort_values("episode").groupby(GROUP + ["seed"], as_index=False).tail(final_evals)
    last = tail.groupby(GROUP + ["seed"], as_index=False).agg(
        env_steps=("env_steps", "last"), eval_return=("eval_return", "mean"),
        eval_success=("eval_success", "mean"), dataset=("dataset", "last"))
    rows = []
    # one point per experiment (one requested dataset size) and dataset: the full dataset is
    # collected per seed, so its transition counts differ a little between seeds; x is their mean
    for key, g in last.groupby(OFFLINE_KEY + ["experiment"]):
        rows.append({**dict(zip(OFFLINE_KEY, key[:4])),
                     "transitions": int(round(float(g["env_steps"].mean()))),
                     "seeds": int(g["seed"].nunique()),
                     "return_mean": float(g["eval_return"].mean()),
                     "return_ci95": ci95(g["eval_return"]),
                     "success_mean": float(g["eval_success"].mean())})
    return pd.DataFrame(rows).sort_values(OFFLINE_KEY + ["transitions"])


def samples_needed(curve: pd.DataFrame) -> pd.DataFrame:
    """Per (env, algo, prior, dataset): the smallest dataset size whose mean final return
    reaches ENOUGH of the largest's (NaN when the full-data return is not positive)."""
    rows = []
    for key, g in curve.groupby(OFFLINE_KEY):
        full = float(g.loc[g["transitions"].idxmax(), "return_mean"])
        enough = g[g["return_mean"] >= ENOUGH * full] if full > 0 else g.iloc[0:0]
        rows.append({**dict(zip(OFFLINE_KEY, key)), "full_return": full,
                     "full_transitions": int(g["transitions"].max()),
                     "transitions_needed": float(enough["transitions"].min())
                     if len(enough) else float("nan")})
    return pd.DataFrame(rows)


def plot_offline(curve: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env, g_env in curve.groupby("env"):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for (algo, prior, dataset), g in g_env.groupby(["algo", "prior", "dataset"]):
            mean, half = g["return_mean"], g["return_ci95"].fillna(0.0)
            on = "" if dataset == NOT_RECORDED else f" [{dataset}]"
            ax.plot(g["transitions"], mean, marker="o", ms=3,
                    label=f"{algo} ({prior}){on}, n={g['seeds'].max()}")
            ax.fill_between(g["transitions"], mean - half, mean + half, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("dataset transitions")
        ax.set_ylabel("final eval return")
        ax.set_title(f"{env}: offline, final return vs dataset size (95% CI)")
        paths.append(_save(fig, ax, out / f"offline_{env}.png"))
    return paths


#: ``expert-mix:EPS`` priors: a prior of known quality (EPS = share of uniform noise)
_EXPERT_MIX = re.compile(r"^expert-mix:([0-9.]+)$")


def prior_quality(df: pd.DataFrame, threshold: float = SOLVED) -> pd.DataFrame:
    """Env steps to ``threshold`` against the expert-mix noise EPS, per (env, algo) (online)."""
    rows = []
    online = df[~df["algo"].isin(OFFLINE)]
    for (env, algo, prior), g in online.groupby(["env", "algo", "prior"]):
        match = _EXPERT_MIX.match(str(prior))
        if not match:
            continue
        reached = _first_reaching(g, threshold)["env_steps"]
        rows.append({"env": env, "algo": algo, "eps": float(match.group(1)),
                     "seeds": int(g["seed"].nunique()), "seeds_solved": int(len(reached)),
                     "env_steps_to_solved_mean": float(reached.mean()) if len(reached)
                     else float("nan"), "env_steps_to_solved_ci95": ci95(reached)})
    return pd.DataFrame(rows).sort_values(["env", "algo", "eps"]) if rows else pd.DataFrame()


def plot_prior_quality(pq: pd.DataFrame, table: pd.DataFrame, out: Path,
                       threshold: float) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env, g_env in pq.groupby("env"):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for algo, g in g_env.groupby("algo"):
            mean, half = g["env_steps_to_solved_mean"], g["env_steps_to_solved_ci95"].fillna(0.0)
            low = mean - (mean - half).clip(lower=0.0)  # env steps cannot be negative
            ax.errorbar(g["eps"], mean, yerr=[low, half], marker="o", ms=4, capsize=3,
                        label=f"{algo} (expert-mix:EPS)")
            for r in g.itertuples():  # how many seeds the point stands on
                if r.seeds_solved < r.seeds:
                    ax.annotate(f"{r.seeds_solved}/{r.seeds} seeds", (r.eps, 0.0 if math.isnan(
                        r.env_steps_to_solved_mean) else r.env_steps_to_solved_mean),
                        textcoords="offset points", xytext=(4, 6), fontsize=7)
            base = table[(table["env"] == env) & (table["algo"] == base_algo(algo))]
            for b in base.itertuples():
                if b.env_steps_to_solved_mean >= 0:
                    ax.axhline(b.env_steps_to_solved_mean, ls="--", color="grey",
                               label=f"{b.algo} [{b.experiment}], {b.seeds_solved}/{b.seeds} "
                               "seeds reached it")
        ax.set_xlabel("EPS (share of uniform noise in the prior)")
        ax.set_ylabel(f"env steps to eval success {threshold:g}")
        ax.set_title(f"{env}: prior quality vs sample efficiency (95% CI)")
        paths.append(_save(fig, ax, out / f"prior_quality_{env}.png"))
    return paths


def _num(value: float, fmt: str = ".3f", missing: str = "") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, fmt)


def _pm(mean: float, std: float, ci: float) -> str:
    """mean ± std [±95% CI half-width]"""
    text = f"{mean:.3f} ± {std:.3f}"
    return text if math.isnan(ci) else f"{text} [±{ci:.3f}]"


def performance_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The final-performance table: header and rows of strings (markdown and LaTeX share it)."""
    threshold = float(table["threshold"].iloc[0]) if len(table) else SOLVED
    datasets = shows_datasets(table)
    header = ["experiment", "env", "algo", "prior", *(["dataset"] if datasets else []), "seeds",
              "episodes", "env steps", "eval success", "eval return", "best success",
              f"episodes to {threshold:g}", f"env steps to {threshold:g}", "speed-up"]
    rows = []
    for r in table.itertuples():
        solved = "never" if not r.seeds_solved else \
            f"{r.episodes_to_solved_mean:.0f} ({r.seeds_solved}/{r.seeds})"
        steps = "never" if not r.seeds_solved else f"{r.env_steps_to_solved_mean:.0f}"
        rows.append([r.experiment, r.env, r.algo, r.prior,
                     *([r.dataset] if datasets else []), str(r.seeds), str(r.episodes),
                     f"{r.env_steps:.0f}", _pm(r.success_mean, r.success_std, r.success_ci95),
                     _pm(r.return_mean, r.return_std, r.return_ci95),
                     f"{r.best_success_mean:.3f}", solved, steps,
                     _speedup_text(r.speedup)])
    return header, rows


def _speedup_text(value: float) -> str:
    if math.isnan(value):
        return ""
    return "∞ (solved at step 0)" if math.isinf(value) else f"{value:.2f}x"


def cost_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The prior-cost table: how much the prior was asked, and what it cost."""
    header = ["experiment", "env", "algo", "prior", "optimal in k", "LLM calls",
              "cache hit rate", "prior s", "wall s"]
    rows = [[r.experiment, r.env, r.algo, r.prior, _num(r.optimal_in_k_mean, ".0%"),
             f"{r.llm_calls_mean:.0f}", _num(r.llm_cache_hit_rate, ".1%"),
             _num(r.prior_seconds_mean, ".0f"), f"{r.wall_s_mean:.0f}"]
            for r in table.itertuples()]
    return header, rows


def offline_rows(needed: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The offline table; ``vs cql`` compares with the cql baseline on the same dataset."""
    datasets = shows_datasets(needed)
    header = ["env", "algo", "prior", *(["dataset"] if datasets else []), "full-data return",
              "transitions", f"transitions to {ENOUGH:.0%} of it", "vs cql"]
    needed = needed.assign(dataset=dataset_column(needed))
    rows = []
    for r in needed.itertuples():
        base = needed[(needed.env == r.env) & (needed.algo == base_algo(r.algo))
                      & (needed.dataset == r.dataset)]
        ratio = ""
        if len(base) and not math.isnan(r.transitions_needed):
            b = float(base["transitions_needed"].iloc[0])
            if not math.isnan(b) and b > 0:
                ratio = f"{1 - r.transitions_needed / b:.0%} fewer"
        need = "not reached" if math.isnan(r.transitions_needed) else f"{r.transitions_needed:.0f}"
        if r.full_return <= 0:  # "90% of a return <= 0" means nothing
            need = "n/a (full-data return <= 0)"
        rows.append([r.env, r.algo, r.prior, *([r.dataset] if datasets else []),
                     f"{r.full_return:.3f}", str(r.full_transitions), need, ratio])
    return header, rows


def prior_quality_rows(pq: pd.DataFrame, threshold: float) -> tuple[list[str], list[list[str]]]:
    header = ["env", "algo", "EPS", "seeds reaching", f"env steps to {threshold:g}", "95% CI"]
    rows = [[r.env, r.algo, f"{r.eps:g}", f"{r.seeds_solved}/{r.seeds}",
             _num(r.env_steps_to_solved_mean, ".0f", "never"),
             _num(r.env_steps_to_solved_ci95, ".0f")] for r in pq.itertuples()]
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                  "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "∞": r"$\infty$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex(header: list[str], rows: list[list[str]], caption: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + latex_escape(caption) + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def markdown_table(table: pd.DataFrame) -> str:
    return markdown(*performance_rows(table))


def load_evals(root: Path) -> pd.DataFrame:
    """All ``seed_<n>.eval.csv`` rows under ``root`` (``llmrl evaluate`` / a sweep's
    ``evaluate:`` grid), with their experiment."""
    frames = []
    for path in sorted(Path(root).rglob("seed_*.eval.csv")):
        if not is_run_file(path, ".eval.csv"):
            continue
        df = pd.read_csv(path)
        if not df.empty:
            df["experiment"] = path.parent.parent.parent.name
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


TRAINED = ["experiment", "env", "algo", "prior", "k"]


def _eval_label(r) -> str:
    opts = json.loads(r.eval_env_kwargs) if isinstance(r.eval_env_kwargs, str) else {}
    extra = "".join(f" {k}={v}" for k, v in sorted(opts.items()))
    mode = "" if r.eval_prior_mode == "sample" else f" {r.eval_prior_mode}"
    return f"{r.eval_prior}{mode} k={r.eval_k}{extra}"


def generalisation(evals: pd.DataFrame) -> pd.DataFrame:
    """Long table: trained run group x evaluation -> success/return mean ± std over seeds."""
    evals = evals.assign(evaluation=[_eval_label(r) for r in evals.itertuples()])
    rows = []
    for key, g in evals.groupby(TRAINED + ["evaluation"]):
        rows.append({**dict(zip(TRAINED + ["evaluation"], key)), "seeds": int(g["seed"].nunique()),
                     "success_mean": float(g["eval_success"].mean()),
                     "success_std": float(g["eval_success"].std(ddof=1)) if len(g) > 1 else 0.0,
                     "return_mean": float(g["eval_return"].mean())})
    return pd.DataFrame(rows)


def generalisation_rows(gen: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The matrix: one row per trained group, one column per evaluation (success mean ± std)."""
    columns = sorted(gen["evaluation"].unique())
    header = ["experiment", "env", "trained", *columns]
    rows = []
    for key, g in gen.groupby(TRAINED):
        cells = {r.evaluation: f"{r.success_mean:.2f} ± {r.success_std:.2f} (n={r.seeds})"
                 for r in g.itertuples()}
        trained = f"{key[2]} ({key[3]}, k={key[4]})"
        rows.append([key[0], key[1], trained, *(cells.get(c, "") for c in columns)])
    return header, rows


def write_report(root: Path, out: Path | None = None, threshold: float = SOLVED,
                 final_evals: int = 1, include_unfinished: bool = False,
                 skip_bad: bool = False, log=print) -> Path:
    """Write ``report.md`` with every figure and table; tables also as CSV and LaTeX (.tex).
    ``final_evals``: the offline curve's final return averages each run's last N evaluations.
    Runs that have not reached their budget are left out (listed) unless
    ``include_unfinished``; ``skip_bad``: leave out CSVs that cannot be read, with a warning."""
    root = Path(root)
    out = Path(out) if out else root
    if not 0.0 < threshold <= 1.0:
        raise UserError(f"--threshold must be in (0, 1], got {threshold}")
    if final_evals < 1:
        raise UserError(f"--final-evals must be >= 1, got {final_evals}")
    df = load_results(root, skip_bad, log)
    left_out: list[str] = []
    if not include_unfinished:
        df, left_out = finished_runs(df)
        if df.empty:
            raise UserError(f"no run under {str(root)!r} has finished; pass --include-unfinished "
                            "to report the runs under way")
        if left_out:
            log(f"left out {len(left_out)} unfinished run(s) (listed in the report; "
                "--include-unfinished keeps them)")
    df, split = split_budgets(df)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(df, threshold)
    curve = curves(df)
    table.to_csv(out / "summary.csv", index=False)
    curve.to_csv(out / "curves.csv", index=False)
    figures = plot_curves(curve, out, "success") + plot_curves(curve, out, "return")
    perf, cost = performance_rows(table), cost_rows(table)
    (out / "summary.tex").write_text(latex(*perf, "Final evaluation: mean ± std over seeds "
                                           "[± 95% CI half-width]"))
    (out / "prior_cost.tex").write_text(latex(*cost, "Prior cost per run (mean over seeds)"))
    text = [
        f"# llmrl report: {root}", "",
        "## Final performance", "",
        "Final evaluation per experiment × env × algo × prior: mean ± std over seeds, [±95% "
        "CI half-width, Student t]. `best success`: mean over seeds of each seed's best eval "
        f"point. `episodes to {threshold:g}` / `env steps to {threshold:g}`: first eval point "
        f"with success >= {threshold:g}, mean over the seeds that reached it. `speed-up`: the "
        "baseline's (dqn for dqn-prior, same env) env steps to that success over this row's, "
        "each a mean over its seeds that got there (see the counts); ∞ when the first "
        "evaluation, before any training, already reached it (the prior alone). "
        "Also in `summary.csv` and `summary.tex`."
        + (" " + DATASETS_NOTE if shows_datasets(table) else ""), "",
        markdown(*perf), "",
        *([f"Unfinished runs, left out (`--include-unfinished` keeps them): "
           f"{'; '.join(left_out)}.", ""] if left_out else []),
        *([f"Seeds of one group with different budgets are shown apart: {'; '.join(split)}.",
           ""] if split else []),
        "## Prior cost", "",
        "`optimal in k`: share of visited training states whose k proposals held an optimal "
        "action. `LLM calls`: model queries (cache misses); the cache hit rate is over all "
        "prior queries; `prior s`: seconds spent in the prior. Also in `prior_cost.tex`.", "",
        markdown(*cost), "",
        "## Learning curves", "",
    ]
    text += [f"![{p.stem}]({p.name})" for p in figures]
    offline = offline_curve(df, final_evals)
    if not offline.empty:
        offline.to_csv(out / "offline_curve.csv", index=False)
        needed = samples_needed(offline)
        needed.to_csv(out / "offline_samples.csv", index=False)
        rows = offline_rows(needed)
        (out / "offline.tex").write_text(latex(*rows, "Offline: dataset transitions needed"))
        text += ["", "## Offline: final return vs dataset size", "",
                 "Mean final eval return over seeds per dataset size"
                 + (f" (each run's mean over its last {final_evals} evaluations)"
                    if final_evals > 1 else "") + "; `transitions to "
                 f"{ENOUGH:.0%}` is the smallest dataset whose return reaches {ENOUGH:.0%} of "
                 "the largest dataset's (n/a when that return is not positive); `vs cql` "
                 "compares that with the cql baseline's on the same dataset.", ""]
        text += [markdown(*rows), ""]
        text += [f"![{p.stem}]({p.name})" for p in plot_offline(offline, out)]
    pq = prior_quality(df, threshold)
    if not pq.empty:
        pq.to_csv(out / "prior_quality.csv", index=False)
        rows = prior_quality_rows(pq, threshold)
        (out / "prior_quality.tex").write_text(latex(*rows, "Prior quality vs samples"))
        text += ["", "## Prior quality: expert-mix noise vs samples needed", "",
                 f"`expert-mix:EPS` follows the env's expert with probability 1-EPS: env steps "
                 f"to eval success {threshold:g} against EPS (mean and 95% CI over the seeds "
                 "that reached it; dashed: the baseline).", "", markdown(*rows), ""]
        text += [f"![{p.stem}]({p.name})" for p in plot_prior_quality(pq, table, out, threshold)]
    evals = load_evals(root)
    if not evals.empty:
        gen = generalisation(evals)
        gen.to_csv(out / "generalisation.csv", index=False)
        rows = generalisation_rows(gen)
        (out / "generalisation.tex").write_text(latex(*rows, "Generalisation: eval success of "
                                                      "the final Q under other priors, k, tasks"))
        text += ["", "## Generalisation", "",
                 "Eval success (mean ± std over seeds) of each run's final Q-function, "
                 "evaluated with the prior, k and env options of the column (`llmrl evaluate`, "
                 "or a grid's `evaluate:`).", "", markdown(*rows), ""]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path
