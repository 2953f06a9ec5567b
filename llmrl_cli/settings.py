"""Config fields that carry their own documentation and rules (d3rlpy style).

A field declared with ``setting(default, doc, ...)`` holds, beside its default, what it means
(``doc``), its unit, the paper's value (``paper``; empty where the paper has none, or where it
depends on the env: see the env presets and docs/paper-settings.md) and the values it may take
(``choices``, or bounds ``low``/``high``/``above``). ``check`` validates a config from those
rules, ``documented`` lists them for ``llmrl config show`` and the docs; rules that relate
several fields stay with the config that has them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .errors import unknown_choice


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, unit: str = "",
            paper: str = "", choices: Sequence[str] = (), low: float | None = None,
            high: float | None = None, above: float | None = None, label: str = "",
            factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its meaning, unit, paper value and valid values (module
    docstring). ``label``: the name errors use (a flag's, e.g. ``--k``; default: the field's);
    ``factory``: for a mutable default."""
    meta = {"doc": doc, "unit": unit, "paper": paper, "choices": tuple(choices), "low": low,
            "high": high, "above": above, "label": label}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check(config: Any) -> None:
    """Raise ValueError (one line) for the first field of ``config`` outside its rules; None
    passes (an optional setting left unset)."""
    for f in dataclasses.fields(config):
        meta, value = f.metadata, getattr(config, f.name)
        if not meta or value is None:
            continue
        name = meta["label"] or f.name
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(str(unknown_choice(name, value, meta["choices"])))
        low, high, above = meta["low"], meta["high"], meta["above"]
        below_ok = low is None or value >= low
        above_ok = above is None or value > above
        high_ok = high is None or value <= high
        if below_ok and above_ok and high_ok:
            continue
        start = f"[{low:g}" if low is not None else f"({above:g}" if above is not None else ""
        if high is not None and start:
            raise ValueError(f"{name} must be in {start}, {high:g}], got {value}")
        if high is not None:
            raise ValueError(f"{name} must be <= {high:g}, got {value}")
        raise ValueError(f"{name} must be {'>=' if low is not None else '>'} "
                         f"{low if low is not None else above:g}, got {value}")


def documented(cls: type) -> dict[str, dict[str, str]]:
    """Per field of ``cls`` declared with ``setting``: its doc, unit and paper value."""
    return {f.name: {"doc": f.metadata["doc"], "unit": f.metadata["unit"],
                     "paper": f.metadata["paper"]}
            for f in dataclasses.fields(cls) if f.metadata}
