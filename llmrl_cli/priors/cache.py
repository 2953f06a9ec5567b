"""Persistent proposal cache: same model, prompt, mode, k, decoding params and seed -> same answer.

One SQLite file (WAL mode, so several runs may share it), fronted by an in-memory dict. Values
are JSON (the raw completions for ``sample`` mode), so the projection rule can change without
invalidating the cache. A file that is not a readable database is moved aside (one warning) and
a new one started; an entry that does not parse is dropped and computed again (the priors also
drop entries of the wrong shape, ``drop``). The file is opened on first use (runs whose prior never asks an LLM never
touch it), and SQLite's "database is locked" answers are retried with backoff: two processes
creating the file at once can deadlock on the journal-mode switch, which SQLite reports at once
instead of waiting.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")
LOCK_WAIT_S = 120.0


def _retry_locked(action: Callable[[], T], wait_s: float = LOCK_WAIT_S) -> T:
    """Run ``action``, retrying SQLite's busy/locked errors with backoff for up to ``wait_s``."""
    deadline, delay = time.monotonic() + wait_s, 0.01
    while True:
        try:
            return action()
        except sqlite3.OperationalError as err:
            if not ("locked" in str(err) or "busy" in str(err)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class ProposalCache:
    """``get_many(keys) -> {key: value}`` and ``put_many({key: value})``; first answer wins."""

    def __init__(self, path: Path | str | None, memory_items: int = 100_000) -> None:
        self.path = Path(path) if path is not None else None
        #: the in-memory front: the most recently used answers (all of them without a file)
        self.memory_items = memory_items if path is not None else None
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and (
                        "locked" in str(exc) or "busy" in str(exc)):
                    raise
                aside = self._move_aside()
                print(f"llmrl: warning: the proposal cache {self.path} cannot be read ({exc}); "
                      f"moved it to {aside} and started a new one", file=sys.stderr)
                self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
            _retry_locked(lambda: db.execute(
                "CREATE TABLE IF NOT EXISTS proposals (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            ))
            db.execute("SELECT key, value FROM proposals LIMIT 1").fetchall()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _move_aside(self) -> Path:
        """Move the unreadable file (and its WAL files) to ``<name>.corrupt-<i>``."""
        i = 1
        while self.path.with_name(f"{self.path.name}.corrupt-{i}").exists():
            i += 1
        aside = self.path.with_name(f"{self.path.name}.corrupt-{i}")
        self.path.replace(aside)
        for suffix in ("-wal", "-shm"):
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                extra.replace(aside.with_name(aside.name + suffix))
        return aside

    def _remember(self, items: dict[str, Any]) -> None:
        self._memory.update(items)
        for key in items:
            self._memory.move_to_end(key)
        if self.memory_items is not None:
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found = {k: self._memory[k] for k in keys if k in self._memory}
        self._remember(found)
        todo = [k for k in dict.fromkeys(keys) if k not in found]
        db = self._connection() if todo else None
        if db is not None:
            for start in range(0, len(todo), 500):
                chunk = todo[start : start + 500]
                query = f"SELECT key, value FROM proposals WHERE key IN ({','.join('?' * len(chunk))})"
                rows = _retry_locked(lambda q=query, c=chunk: db.execute(q, c).fetchall())
                loaded, garbled = {}, []
                for key, value in rows:
                    try:
                        loaded[key] = json.loads(value)
                    except (ValueError, TypeError):
                        garbled.append(key)
                if garbled:
                    self.drop(garbled)
                found.update(loaded)
                self._remember(loaded)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        self._remember(items)
        db = self._connection() if items else None
        if db is not None:
            rows = [(k, json.dumps(v)) for k, v in items.items()]

            def write() -> None:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany("INSERT OR IGNORE INTO proposals (key, value) VALUES (?, ?)", rows)

            _retry_locked(write)

    def drop(self, keys: list[str]) -> None:
        """Forget these entries (garbled, or of the wrong shape), to be computed again."""
        for key in keys:
            self._memory.pop(key, None)
        db = self._connection() if keys else None
        if db is not None:
            def delete() -> None:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany("DELETE FROM proposals WHERE key = ?", [(k,) for k in keys])

            _retry_locked(delete)

    def __len__(self) -> int:
        db = self._connection()
        if db is not None:
            return int(db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0])
        return len(self._memory)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
