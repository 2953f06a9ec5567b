"""Persistent proposal cache: same model, prompt, mode, k, decoding params and seed -> same answer.

One SQLite file (WAL mode, so several runs may share it), fronted by an in-memory dict. Values
are JSON (the raw completions for ``sample`` mode), so the projection rule can change without
invalidating the cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class ProposalCache:
    """``get_many(keys) -> {key: value}`` and ``put_many({key: value})``; first answer wins."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, Any] = {}
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS proposals (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found = {k: self._memory[k] for k in keys if k in self._memory}
        todo = [k for k in dict.fromkeys(keys) if k not in found]
        if self._db is not None and todo:
            for start in range(0, len(todo), 500):
                chunk = todo[start : start + 500]
                rows = self._db.execute(
                    f"SELECT key, value FROM proposals WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, value in rows:
                    found[key] = self._memory[key] = json.loads(value)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        self._memory.update(items)
        if self._db is not None and items:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR IGNORE INTO proposals (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in items.items()],
                )

    def __len__(self) -> int:
        if self._db is not None:
            return int(self._db.execute("SELECT COUNT(*) FROM proposals").fetchone()[0])
        return len(self._memory)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
