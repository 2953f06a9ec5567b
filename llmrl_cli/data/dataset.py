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


def _rows(path: Path) -> Iterable[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line."""
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"dataset {str(path)!r} line {number} is not JSON: "
                                    f"{exc.msg}") from None
                if not isinstance(row, dict):
                    raise UserError(f"dataset {str(path)!r} line {number} is not a JSON object")
                yield number, row


#: each transition field and what it must hold
FIELDS = {"obs_text": "a text", "actions": "a list of texts", "action": "a text",
          "reward": "a number", "next_obs_text": "a text", "next_actions": "a list of texts",
          "done": "true or false"}


def _field_is_valid(name: str, value) -> bool:
    if name in ("obs_text", "action", "next_obs_text"):
        return isinstance(value, str)
    if name in ("actions", "next_actions"):
        return isinstance(value, list) and all(isinstance(a, str) for a in value)
    if name == "reward":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, bool) or value in (0, 1)  # done


def _transition(row: dict, episode: int, t: int, where: str) -> Transition:
    """A checked transition; ``where`` (file and line) names a bad row in its one-line error."""
    for name, kind in FIELDS.items():
        if name not in row:
            raise UserError(f"{where} lacks the field {name!r}")
        if not _field_is_valid(name, row[name]):
            raise UserError(f"{where}: {name} must be {kind}, not {row[name]!r}")
    if row["action"] not in row["actions"]:
        raise UserError(f"{where}: the action {row['action']!r} is not among its admissible "
                        "actions")
    return Transition(episode=episode, t=t, obs_text=row["obs_text"],
                      actions=tuple(row["actions"]), action=row["action"],
                      reward=float(row["reward"]), next_obs_text=row["next_obs_text"],
                      next_actions=tuple(row["next_actions"]), done=bool(row["done"]))


def from_paper_rows(rows: Iterable[dict], env: str, where: str = "row") -> Dataset:
    """A Dataset from the paper's rows (dicts of its JSON-lines fields), in their order.

    The paper's data has no episode ids: an episode ends where a transition is done or the
    next one does not start from its ``next_obs_text``. The instruction is the first row's."""
    data: Dataset | None = None
    episode, t, previous = 0, 0, None
    for number, row in enumerate(rows, 1):
        if data is None:
            if not isinstance(row.get("instruction"), str):
                raise UserError(f"{where} {number} has no instruction text (neither an "
                                f"{FORMAT} file nor the paper's JSON lines)")
            data = Dataset(env, row["instruction"])
        if previous is not None:
            if previous.done or row.get("obs_text") != previous.next_obs_text:
                episode, t = episode + 1, 0
            else:
                t += 1
        previous = _transition(row, episode, t, f"{where} {number}")
        data.transitions.append(previous)
    return data if data is not None else Dataset(env, "")


def load_dataset(path: Path | str, env: str | None = None) -> Dataset:
    """Our format, or the paper's JSON lines (episodes rebuilt); ``env`` names the latter's env.
    A row that is not a valid transition is one UserError naming its line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset {str(path)!r} does not exist")
    rows = iter(_rows(path))
    first = next(rows, None)
    if first is None:
        raise UserError(f"dataset {str(path)!r} is empty")
    _, header = first
    if header.get("format") != FORMAT:
        numbered = [first, *rows]
        data = from_paper_rows((row for _, row in numbered), env or "",
                               where=f"dataset {str(path)!r} row")
        return data
    if header.get("version") != VERSION:
        raise UserError(f"dataset {str(path)!r} has version {header.get('version')}; "
                        f"this llmrl reads version {VERSION}")
    for name in ("env", "instruction"):
        if not isinstance(header.get(name), str):
            raise UserError(f"dataset {str(path)!r} line 1 lacks the text field {name!r}")
    data = Dataset(header["env"], header["instruction"])
    for number, row in rows:
        where = f"dataset {str(path)!r} line {number}"
        for name in ("episode", "t"):
            if not isinstance(row.get(name), int) or isinstance(row.get(name), bool):
                raise UserError(f"{where}: {name} must be a whole number, not {row.get(name)!r}")
        data.transitions.append(_transition(row, row["episode"], row["t"], where))
    return data
