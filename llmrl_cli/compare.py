"""Does a rerun reproduce recorded results? ``llmrl compare REFERENCE NEW`` pairs the run CSVs
of two results folders by their path and compares them value by value.

A seed fixes every number a run writes except its costs: wall-clock times, and the split of
prior and encoder queries into cache hits and model calls (a warm proposal cache answers what
a cold one computes; the answers, and so the results, are the same). Those columns are left
out; every other column must match, numbers to a relative tolerance (default 1e-6, for float
rounding), texts exactly. The CI compares ``make reproduce PROFILE=quick`` with
``results/reference/quick/`` this way.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .errors import UserError
from .report import is_run_file

#: what a run costs rather than what it found: times, and the cache's share of the queries
COST_COLUMNS = ("wall_s", "prior_seconds", "encoder_seconds", "update_seconds",
                "llm_calls", "llm_cache_hits", "llm_tokens", "encoder_texts", "encoder_hits")


def run_files(folder: Path) -> dict[str, Path]:
    """The run CSVs under ``folder`` (``seed_N.csv`` and ``seed_N.eval.csv``) by relative path."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("seed_*.csv"))
            if is_run_file(p, ".csv") or is_run_file(p, ".eval.csv")}


def _same(a, b, rtol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
    return a == b


def compare_run(reference: Path, new: Path, rtol: float = 1e-6) -> str | None:
    """None when ``new`` holds the values of ``reference``, else what differs first."""
    ref, got = pd.read_csv(reference), pd.read_csv(new)
    ref = ref.drop(columns=[c for c in COST_COLUMNS if c in ref.columns])
    got = got.drop(columns=[c for c in COST_COLUMNS if c in got.columns])
    if list(ref.columns) != list(got.columns):
        return f"columns differ: {sorted(set(ref.columns) ^ set(got.columns))}"
    if len(ref) != len(got):
        return f"{len(got)} rows, the reference has {len(ref)}"
    for row in range(len(ref)):
        for column in ref.columns:
            a, b = ref.at[row, column], got.at[row, column]
            a = float(a) if isinstance(a, (int, float)) else a  # int vs float of one value
            b = float(b) if isinstance(b, (int, float)) else b
            if not _same(a, b, rtol):
                return f"row {row + 1}, {column}: {b!r}, the reference has {a!r}"
    return None


def compare_results(reference: Path, new: Path, rtol: float = 1e-6) -> tuple[int, list[str]]:
    """(run files that match, one line per file that is missing, extra or different)."""
    ref_files, new_files = run_files(reference), run_files(new)
    if not ref_files:
        raise UserError(f"{reference} holds no run CSVs (seed_N.csv)")
    problems = [f"{name}: missing from {new}" for name in ref_files if name not in new_files]
    problems += [f"{name}: not in the reference" for name in new_files if name not in ref_files]
    matched = 0
    for name in ref_files:
        if name in new_files:
            difference = compare_run(ref_files[name], new_files[name], rtol)
            if difference is None:
                matched += 1
            else:
                problems.append(f"{name}: {difference}")
    return matched, problems
