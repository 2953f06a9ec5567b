"""A run's files, written so that a killed run resumes and nothing a user wrote is lost.

``<out>/<experiment>/<env>/<algo>/seed_<n>``: ``.csv`` (one row per evaluation), ``.yaml`` (the
resolved config), ``.ckpt.pt`` (the checkpoint to resume from), ``.ckpt.prev.pt`` (the one
before it) and ``.seed_<n>.lock`` (held by the process writing the run). Every loop (online,
offline, policy) keeps its run through one ``RunStore``: it takes the lock, checks that results
already there came from the same configuration, writes CSV rows and checkpoints atomically
(a temporary file, fsync, rename) and, on resume, checks the files instead of trusting them:

- each checkpoint holds the CSV text it covers, so a resume drops rows written after it, and
  restores a CSV that is missing, cut short or changed (a changed one is kept aside first);
- a checkpoint that cannot be read gives way to the previous one; with none, one error line;
- ``--overwrite`` leaves the earlier run's files in place until the new run starts (its
  configuration resolved and its pieces built), then moves them to ``replaced/seed_<n>-<i>/``.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from ..config import (AGENT_VALUES_BEFORE_ADDED, VALUES_BEFORE_ADDED, RunConfig, dump_yaml,
                      identity_of)
from ..errors import UserError


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a kill leaves the old file or the new, whole."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # a full disk, say: the old file stays, the partial copy goes
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


class CheckpointUnreadable(UserError):
    """A checkpoint file that is truncated, empty or garbled."""


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's state; an unreadable file is one ``CheckpointUnreadable`` naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated, empty or garbled file
        raise CheckpointUnreadable(f"{path} cannot be read ({_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise CheckpointUnreadable(f"{path} cannot be read (not an llmrl checkpoint)")
    return state


class RunStore:
    """The files of the run ``cfg`` (module docstring); ``overwrite`` replaces earlier results
    of another configuration instead of refusing to touch them; ``log`` takes the one-line
    notes about repaired files."""

    def __init__(self, cfg: RunConfig, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> None:
        self.cfg, self.overwrite, self.log = cfg, overwrite, log
        self.csv_path = cfg.stem.with_suffix(".csv")
        self.yaml_path = cfg.stem.with_suffix(".yaml")
        self.ckpt_path = cfg.stem.parent / f"{cfg.stem.name}.ckpt.pt"
        self.prev_ckpt_path = cfg.stem.parent / f"{cfg.stem.name}.ckpt.prev.pt"
        self.lock_path = cfg.stem.parent / f".{cfg.stem.name}.lock"
        self._lock_handle: IO[str] | None = None
        self.csv_text = ""  # the CSV as this run has written it (header and rows)
        self._replacing = False  # overwrite: earlier files wait to be moved aside at the start

    # -- the lock ---------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold an exclusive lock on the run's files until ``release``, so that two processes
        (two sweeps over one results folder, say) never write one run at once."""
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise UserError(f"{self.csv_path} is being run by another process (pid {owner}); "
                            "wait for it to end, or use another --experiment or --out") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def release(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # releases the lock
            self._lock_handle = None

    # -- opening ----------------------------------------------------------------------------
    def open(self) -> dict | None:
        """Take the lock; return the checkpoint to resume from, or None to start fresh; raise
        if results there came from another configuration (unless ``overwrite``) or have no
        readable checkpoint."""
        self.lock()
        if not self.csv_path.exists() and not self.ckpt_path.exists():
            return None
        if self.overwrite:
            self._replacing = True  # moved aside by ``start``, once the new run can start
            return None
        if self.yaml_path.exists():
            self._check_identity(yaml.safe_load(self.yaml_path.read_text()))
        if not self.ckpt_path.exists():
            finished = self._finished_by_its_csv()
            if finished is not None:
                return finished
            raise UserError(f"{self.csv_path} exists without a checkpoint to resume from; pass "
                            "--overwrite to replace it, or use another --experiment or --out")
        return self._load_checkpoint()

    def _finished_by_its_csv(self) -> dict | None:
        """Results kept without their checkpoint (committed results in a fresh clone, say)
        whose CSV reached this run's budget, beside the config it came from: a state that
        says the run is complete (the loops' "already complete"). None otherwise."""
        if not (self.csv_path.exists() and self.yaml_path.exists()):
            return None
        try:
            rows = list(csv.DictReader(io.StringIO(self.csv_path.read_text())))
            last = int(rows[-1]["episode"])
        except (OSError, UnicodeDecodeError, csv.Error, IndexError, KeyError, TypeError,
                ValueError):
            return None
        # the offline loop counts gradient steps in its CSV's episode column
        budget = getattr(self.cfg.agent, "grad_steps", None)
        if not isinstance(budget, int):
            budget = self.cfg.episodes
        if last < budget:
            return None
        return {"finished": True, "episodes_done": last, "grad_steps": last}

    def _load_checkpoint(self) -> dict:
        """The latest readable checkpoint: the last one, else the one before it."""
        try:
            return read_checkpoint(self.ckpt_path)
        except CheckpointUnreadable as exc:
            problem = str(exc)
        if self.prev_ckpt_path.exists():
            try:
                state = read_checkpoint(self.prev_ckpt_path)
                self.log(f"{problem}; resuming from the previous one, {self.prev_ckpt_path}")
                return state
            except CheckpointUnreadable:
                pass
        raise UserError(f"{problem} and there is no earlier checkpoint; pass --overwrite to run "
                        "it again")

    def _check_identity(self, old: dict | None) -> None:
        """Refuse results written by a configuration other than this run's. Settings added to
        llmrl after they were written count as their default, or as the value they had in
        effect then (``VALUES_BEFORE_ADDED``)."""
        if old is None:
            return
        old_cfg = identity_of(old)
        new_cfg = self.cfg.identity()
        defaults = RunConfig().to_dict()
        for key in set(new_cfg) - set(old_cfg):
            old_cfg[key] = VALUES_BEFORE_ADDED.get(key, defaults.get(key))
        agent_defaults = {"agent": dataclasses.asdict(type(self.cfg.agent)())}
        for key, value in identity_of(agent_defaults)["agent"].items():
            old_cfg.get("agent", {}).setdefault(key, AGENT_VALUES_BEFORE_ADDED.get(key, value))
        if old_cfg != new_cfg:
            diff = sorted(k for k in set(old_cfg) | set(new_cfg)
                          if old_cfg.get(k) != new_cfg.get(k))
            raise UserError(
                f"{self.csv_path} was written by a different configuration (differs in: "
                f"{', '.join(diff)}); pass --overwrite to replace it, or use another "
                "--experiment or --out"
            )

    def start(self, config_text: str | None = None) -> None:
        """The run starts: under ``overwrite``, move the earlier run's files aside; write the
        resolved config beside the CSV (``config_text``: as given, else ``dump_yaml``)."""
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        if self._replacing:
            self._move_aside()
            self._replacing = False
        self.yaml_path.write_text(dump_yaml(self.cfg) if config_text is None else config_text)

    def _move_aside(self) -> None:
        """Move every ``seed_<n>.*`` file of the run to a new ``replaced/seed_<n>-<i>/``."""
        name = self.cfg.stem.name
        files = sorted(self.cfg.run_dir.glob(f"{name}.*"))
        if not files:
            return
        i = 1
        while (self.cfg.run_dir / "replaced" / f"{name}-{i}").exists():
            i += 1
        aside = self.cfg.run_dir / "replaced" / f"{name}-{i}"
        aside.mkdir(parents=True)
        for path in files:
            os.replace(path, aside / path.name)
        self.log(f"moved the earlier {name} files to {aside}")

    # -- rows and checkpoints ---------------------------------------------------------------
    def append_row(self, row: dict[str, Any], columns: list[str]) -> None:
        """Add one CSV row (``columns`` in order; the header first in a new file); the file is
        rewritten whole, atomically, so a kill never leaves half a row."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
        if not self.csv_text:
            writer.writeheader()
        writer.writerow(row)
        self.csv_text += out.getvalue()
        write_atomically(self.csv_path, self.csv_text.encode())

    def save_checkpoint(self, state: dict) -> None:
        """Write the checkpoint atomically, with the CSV text it covers; the one before it
        stays as ``.ckpt.prev.pt``."""
        buffer = io.BytesIO()
        torch.save({**state, "csv_text": self.csv_text}, buffer)
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".tmp")
        write_atomically(tmp, buffer.getvalue())
        if self.ckpt_path.exists():
            os.replace(self.ckpt_path, self.prev_ckpt_path)
        os.replace(tmp, self.ckpt_path)

    def restore_rows(self, state: dict) -> None:
        """On resume: make the CSV the rows the checkpoint covers. Rows written after it are
        dropped; a CSV missing, cut short or changed is restored from the checkpoint's copy
        (a changed one kept aside as ``seed_<n>.changed.csv``), with a one-line note."""
        saved = state.get("csv_text")
        current = self.csv_path.read_bytes().decode() if self.csv_path.exists() else None
        if saved is None:  # a checkpoint from before it held the CSV: keep its row count
            lines = (current or "").splitlines(keepends=True)
            saved = "".join(lines[: 1 + state["csv_rows"]])
        elif current is None or not current.startswith(saved):
            rows = max(len(saved.splitlines()) - 1, 0)
            note = f"restored its {rows} rows from the checkpoint"
            if current is None:
                self.log(f"{self.csv_path} is missing; {note}")
            elif saved.startswith(current):
                self.log(f"{self.csv_path} was cut short; {note}")
            else:
                aside = self._free_name("changed", ".csv")
                os.replace(self.csv_path, aside)
                self.log(f"{self.csv_path} was changed since its checkpoint; kept it as {aside} "
                         f"and {note}")
        self.csv_text = saved
        if current != saved and (saved or current is not None):
            write_atomically(self.csv_path, saved.encode())

    def replace_rows(self, text: str) -> None:
        """Rewrite the CSV as ``text`` (a migrated header, say), atomically."""
        self.csv_text = text
        write_atomically(self.csv_path, text.encode())

    def _free_name(self, label: str, suffix: str) -> Path:
        """``seed_<n>.<label><suffix>``, or ``seed_<n>.<label>-<i><suffix>`` when an earlier
        one is there: a file kept aside never replaces another."""
        name, i = self.cfg.stem.name, 1
        path = self.cfg.run_dir / f"{name}.{label}{suffix}"
        while path.exists():
            i += 1
            path = self.cfg.run_dir / f"{name}.{label}-{i}{suffix}"
        return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["RunStore"]
