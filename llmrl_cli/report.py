"""Per-seed CSVs -> learning-curve figure (mean and 95% confidence band) and summary table."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .errors import UserError

GROUP = ["experiment", "env", "algo", "prior"]
#: "episodes to" a success rate: the sample-efficiency figure of the summary table
SOLVED = 0.8
# two-sided 95% Student-t quantiles for n-1 degrees of freedom (n = seeds)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    if dof <= 0:
        return float("nan")
    return _T95.get(dof) or next((v for k, v in sorted(_T95.items()) if k >= dof), 1.96)


def ci95(values: pd.Series) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t); NaN for one seed."""
    n = int(values.count())
    return t95(n - 1) * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")


def load_results(root: Path) -> pd.DataFrame:
    """All ``<experiment>/<env>/<algo>/seed_<n>.csv`` under ``root`` (root may be one experiment)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results folder {str(root)!r} does not exist")
    frames = []
    for path in sorted(root.rglob("seed_*.csv")):
        df = pd.read_csv(path)
        if df.empty:
            continue
        df["experiment"] = path.parent.parent.parent.name
        frames.append(df)
    if not frames:
        raise UserError(f"no seed_<n>.csv files under {str(root)!r}; run `llmrl run` first")
    return pd.concat(frames, ignore_index=True)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Final eval point of each seed, aggregated per group."""
    last = df.sort_values("episode").groupby(GROUP + ["seed"], as_index=False).tail(1)
    rows = []
    for key, g in last.groupby(GROUP):
        all_rows = df.merge(g[GROUP + ["seed"]], on=GROUP + ["seed"])
        queries = g["llm_calls"] + g["llm_cache_hits"]
        reached = all_rows[all_rows["eval_success"] >= SOLVED].groupby("seed")["episode"].min()
        optimal = g["prior_optimal_rate"] if "prior_optimal_rate" in g else pd.Series(dtype=float)
        rows.append({
            **dict(zip(GROUP, key)),
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
            # first eval episode with success >= SOLVED, over the seeds that got there
            "episodes_to_solved_mean": float(reached.mean()) if len(reached) else float("nan"),
            "seeds_solved": int(len(reached)),
            # share of visited training states whose k proposals held an optimal action
            "optimal_in_k_mean": float(pd.to_numeric(optimal, errors="coerce").mean()),
            "wall_s_mean": float(g["wall_s"].mean()),
            "llm_calls_mean": float(g["llm_calls"].mean()),
            "llm_cache_hit_rate": float(g["llm_cache_hits"].sum() / queries.sum())
            if queries.sum() else float("nan"),
        })
    return pd.DataFrame(rows)


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


def plot_curves(curve: pd.DataFrame, out: Path, metric: str = "success") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env, g_env in curve.groupby("env"):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for key, g in g_env.groupby(["experiment", "algo", "prior"]):
            label = f"{key[1]} ({key[2]})" + ("" if key[0] == "default" else f" [{key[0]}]")
            mean, half = g[f"{metric}_mean"], g[f"{metric}_ci95"].fillna(0.0)
            ax.plot(g["env_steps"], mean, marker="o", ms=3, label=f"{label}, n={g['seeds'].max()}")
            low, high = mean - half, mean + half
            if metric == "success":  # a rate: the band cannot leave [0, 1]
                low, high = low.clip(0.0, 1.0), high.clip(0.0, 1.0)
            ax.fill_between(g["env_steps"], low, high, alpha=0.2)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"eval {metric}")
        ax.set_title(f"{env}: eval {metric} (mean, 95% CI over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"curve_{env}_{metric}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


#: offline algos (their runs' env_steps = dataset transitions trained on)
OFFLINE = ("cql", "cql-prior")
#: the share of full-data performance that defines "enough data" in the offline table
ENOUGH = 0.9


def offline_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Final eval return per offline (env, algo, prior, dataset size), over seeds."""
    off = df[df["algo"].isin(OFFLINE)]
    if off.empty:
        return pd.DataFrame()
    last = off.sort_values("episode").groupby(GROUP + ["seed"], as_index=False).tail(1)
    rows = []
    for key, g in last.groupby(["env", "algo", "prior", "env_steps"]):
        rows.append({**dict(zip(["env", "algo", "prior", "transitions"], key)),
                     "seeds": int(g["seed"].nunique()),
                     "return_mean": float(g["eval_return"].mean()),
                     "return_ci95": ci95(g["eval_return"]),
                     "success_mean": float(g["eval_success"].mean())})
    return pd.DataFrame(rows).sort_values(["env", "algo", "prior", "transitions"])


def samples_needed(curve: pd.DataFrame) -> pd.DataFrame:
    """Per (env, algo, prior): the smallest dataset whose mean final return reaches ENOUGH of
    the largest dataset's (NaN when the full-data return is not positive)."""
    rows = []
    for key, g in curve.groupby(["env", "algo", "prior"]):
        full = float(g.loc[g["transitions"].idxmax(), "return_mean"])
        enough = g[g["return_mean"] >= ENOUGH * full] if full > 0 else g.iloc[0:0]
        rows.append({**dict(zip(["env", "algo", "prior"], key)), "full_return": full,
                     "full_transitions": int(g["transitions"].max()),
                     "transitions_needed": float(enough["transitions"].min())
                     if len(enough) else float("nan")})
    return pd.DataFrame(rows)


def offline_markdown(needed: pd.DataFrame) -> list[str]:
    lines = [f"| env | algo | prior | full-data return | transitions | transitions to "
             f"{ENOUGH:.0%} of it | vs cql |", "|---|---|---|---|---|---|---|"]
    for r in needed.itertuples():
        base = needed[(needed.env == r.env) & (needed.algo == "cql")]
        ratio = ""
        if r.algo != "cql" and len(base) and not math.isnan(r.transitions_needed):
            b = float(base["transitions_needed"].iloc[0])
            if not math.isnan(b) and b > 0:
                ratio = f"{1 - r.transitions_needed / b:.0%} fewer"
        need = "not reached" if math.isnan(r.transitions_needed) else f"{r.transitions_needed:.0f}"
        lines.append(f"| {r.env} | {r.algo} | {r.prior} | {r.full_return:.3f} | "
                     f"{r.full_transitions} | {need} | {ratio} |")
    return lines


def plot_offline(curve: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env, g_env in curve.groupby("env"):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for (algo, prior), g in g_env.groupby(["algo", "prior"]):
            mean, half = g["return_mean"], g["return_ci95"].fillna(0.0)
            ax.plot(g["transitions"], mean, marker="o", ms=3,
                    label=f"{algo} ({prior}), n={g['seeds'].max()}")
            ax.fill_between(g["transitions"], mean - half, mean + half, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("dataset transitions")
        ax.set_ylabel("final eval return")
        ax.set_title(f"{env}: offline, final return vs dataset size (95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"offline_{env}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def markdown_table(table: pd.DataFrame) -> str:
    lines = [
        "| experiment | env | algo | prior | seeds | episodes | env steps | eval success | "
        f"eval return | best success | episodes to {SOLVED:g} | optimal in k | wall s | "
        "LLM calls | cache hit rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        hit = "" if math.isnan(r.llm_cache_hit_rate) else f"{r.llm_cache_hit_rate:.1%}"
        solved = ("never" if not r.seeds_solved else
                  f"{r.episodes_to_solved_mean:.0f} ({r.seeds_solved}/{r.seeds})")
        optimal = "" if math.isnan(r.optimal_in_k_mean) else f"{r.optimal_in_k_mean:.0%}"
        lines.append(
            f"| {r.experiment} | {r.env} | {r.algo} | {r.prior} | {r.seeds} | {r.episodes} | "
            f"{r.env_steps:.0f} | {_fmt(r.success_mean, r.success_std)} | "
            f"{_fmt(r.return_mean, r.return_std)} | {r.best_success_mean:.3f} | {solved} | "
            f"{optimal} | {r.wall_s_mean:.0f} | {r.llm_calls_mean:.0f} | {hit} |"
        )
    return "\n".join(lines)


def write_report(root: Path, out: Path | None = None) -> Path:
    """Write ``report.md``, ``summary.csv``, ``curves.csv`` and curve PNGs; return report path."""
    root = Path(root)
    out = Path(out) if out else root
    df = load_results(root)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(df)
    curve = curves(df)
    table.to_csv(out / "summary.csv", index=False)
    curve.to_csv(out / "curves.csv", index=False)
    figures = plot_curves(curve, out, "success") + plot_curves(curve, out, "return")
    text = [
        f"# llmrl report: {root}", "",
        "Final evaluation per env x algo x prior (mean ± std over seeds; `best success` is the "
        f"mean over seeds of each seed's best eval point; `episodes to {SOLVED:g}` is the mean "
        f"first eval episode with success >= {SOLVED:g}, over the seeds that reached it; "
        "`optimal in k` is the share of visited training states whose k proposals held an "
        "optimal action; LLM calls count model queries, the cache hit rate is over all prior "
        "queries).", "",
        markdown_table(table), "",
    ]
    text += [f"![{p.stem}]({p.name})" for p in figures]
    offline = offline_curve(df)
    if not offline.empty:
        offline.to_csv(out / "offline_curve.csv", index=False)
        needed = samples_needed(offline)
        text += ["", "## Offline: final return vs dataset size", "",
                 f"Mean final eval return over seeds per dataset size; `transitions to "
                 f"{ENOUGH:.0%}` is the smallest dataset whose return reaches {ENOUGH:.0%} of "
                 "the largest dataset's; `vs cql` compares that with the cql baseline's.", ""]
        text += offline_markdown(needed) + [""]
        text += [f"![{p.stem}]({p.name})" for p in plot_offline(offline, out)]
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path
