"""Offline datasets: transitions of text episodes, saved as JSON lines.

Our format (``llmrl-dataset`` version 1): a header line
``{"format": "llmrl-dataset", "version": 1, "env": ..., "instruction": ...}``, then one
transition per line with ``episode, t, obs_text, actions, action, reward, next_obs_text,
next_actions, done``. ``episode`` and ``t`` let the prior's prompt history (the last 3
observation/action pairs) be rebuilt for any dataset state.

The paper's Overcooked (Salad) dataset, converted to JSON lines, is ``instruction, obs_text,
action, next_obs_text, reward, done, actions, next_actions`` with no episode ids; ``load_dataset``
reads it as it is and cuts episodes where a transition does not continue the previous one
(its ``obs_text`` differs from the previous ``next_obs_text``) or the previous one was done.
``llmrl dataset import-paper`` converts the paper's own pickle to our format
(``data/paper_dataset.py``).
"""

from __future__ import annotations

import json
import os
import random
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError

FORMAT = "llmrl-dataset"
VERSION = 1


@dataclass(frozen=True)
class Transition:
    episode: int
    t: int
    obs_text: str
    actions: tuple[str, ...]
    action: str
    reward: float
    next_obs_text: str
    next_actions: tuple[str, ...]
    done: bool


@dataclass
class Dataset:
    env: str
    instruction: str
    transitions: list[Transition] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.transitions)

    def episodes(self) -> list[list[Transition]]:
        out: dict[int, list[Transition]] = {}
        for tr in self.transitions:
            out.setdefault(tr.episode, []).append(tr)
        return [sorted(steps, key=lambda tr: tr.t) for steps in out.values()]

    def successful_episodes(self) -> int:
        """Episodes that end done with a positive last reward (a correct delivery)."""
        return sum(1 for steps in self.episodes() if steps[-1].done and steps[-1].reward > 0)

    def subset(self, max_transitions: int, seed: int) -> Dataset:
        """Whole episodes in a seeded random order until ``max_transitions`` (the last one cut)."""
        episodes = self.episodes()
        random.Random(seed).shuffle(episodes)
        kept: list[Transition] = []
        for steps in episodes:
            if len(kept) >= max_transitions:
                break
            kept += steps[: max_transitions - len(kept)]
        return Dataset(self.env, self.instruction, kept)

    def save(self, path: Path | str) -> Path:
        """Write atomically: a temporary file beside ``path``, then ``os.replace``, so a reader
        never sees half a dataset and two writers never share a temporary file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with tmp.open("x") as f:
                f.write(json.dumps({"format": FORMAT, "version": VERSION, "env": self.env,
                                    "instruction": self.instruction}) + "\n")
                for tr in self.transitions:
                    f.write(json.dumps(asdict(tr)) + "\n")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path


def _rows(path: Path) -> Iterable[dict]:
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"dataset {str(path)!r} line {number} is not JSON: "
                                    f"{exc.msg}") from None


def _transition(row: dict, episode: int, t: int) -> Transition:
    return Transition(episode=episode, t=t, obs_text=row["obs_text"],
                      actions=tuple(row["actions"]), action=row["action"],
                      reward=float(row["reward"]), next_obs_text=row["next_obs_text"],
                      next_actions=tuple(row["next_actions"]), done=bool(row["done"]))


def from_paper_rows(rows: Iterable[dict], env: str) -> Dataset:
    """A Dataset from the paper's rows (dicts of its JSON-lines fields), in their order.

    The paper's data has no episode ids: an episode ends where a transition is done or the
    next one does not start from its ``next_obs_text``. The instruction is the first row's."""
    data: Dataset | None = None
    episode, t, previous = 0, 0, None
    for row in rows:
        if data is None:
            data = Dataset(env, row["instruction"])
        if previous is not None:
            if previous.done or row["obs_text"] != previous.next_obs_text:
                episode, t = episode + 1, 0
            else:
                t += 1
        previous = _transition(row, episode, t)
        data.transitions.append(previous)
    return data if data is not None else Dataset(env, "")


def load_dataset(path: Path | str, env: str | None = None) -> Dataset:
    """Our format, or the paper's JSON lines (episodes rebuilt); ``env`` names the latter's env."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset {str(path)!r} does not exist")
    rows = iter(_rows(path))
    first = next(rows, None)
    if first is None:
        raise UserError(f"dataset {str(path)!r} is empty")
    try:
        if first.get("format") == FORMAT:
            if first.get("version") != VERSION:
                raise UserError(f"dataset {str(path)!r} has version {first.get('version')}; "
                                f"this llmrl reads version {VERSION}")
            data = Dataset(first["env"], first["instruction"])
            data.transitions = [Transition(**{**r, "actions": tuple(r["actions"]),
                                              "next_actions": tuple(r["next_actions"])})
                                for r in rows]
            return data
        return from_paper_rows([first, *rows], env or "")
    except (KeyError, TypeError) as exc:
        raise UserError(f"dataset {str(path)!r} is neither an {FORMAT} file nor the paper's "
                        f"JSON lines (missing field {exc})") from None
