"""The run registry: one SQLite row per run under the user's state dir.

Why SQLite: several ``mudpuppy`` processes (a foreground launch, ``runs`` in another terminal, a detached
supervisor's parent) read and write it at once; SQLite gives atomic updates without a server. The file lives
in ``$MUDPUPPY_STATE_DIR`` or ``$XDG_STATE_HOME/mudpuppy`` (default ``~/.local/state/mudpuppy``).
Rows hold plain values only: never secrets, never environment dumps.
"""

from __future__ import annotations

import builtins
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import UserError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    backend TEXT NOT NULL,
    handle TEXT,
    bundle_hash TEXT NOT NULL,
    config_path TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    output TEXT,
    launch TEXT,
    group_id TEXT,
    parent_id TEXT
)
"""

# Columns added after the first release, with their SQL type: an older registry file gets them on open.
_ADDED_COLUMNS = {"group_id": "TEXT", "parent_id": "TEXT"}


def state_dir() -> Path:
    explicit = os.environ.get("MUDPUPPY_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mudpuppy"


def cache_dir() -> Path:
    explicit = os.environ.get("MUDPUPPY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mudpuppy"


@dataclass
class RunRecord:
    id: str
    name: str
    backend: str
    handle: str | None
    bundle_hash: str
    config_path: str
    status: str
    reason: str | None
    attempts: int
    created: float
    updated: float
    output: str | None
    launch: str | None = None  # the run's launch: section as JSON (names of secrets only), to reach it later
    group_id: str | None = None  # the sweep this run belongs to (members share it)
    parent_id: str | None = None  # the run this one continues (``mudpuppy resume``): attempts form a chain

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id() -> str:
    """Sortable by time, short enough to type: ``20250101-120000-ab12cd34ef``.

    40 random bits per second: two launches in the same second (a sweep script, two users sharing a cluster's
    run folders) clash with odds of about 1 in 10**12; 16 bits clashed once in a few hundred same-second launches.
    The registry still refuses a duplicate rather than overwrite a run.
    """
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(5)


class Registry:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "runs.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)
            present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for column, sql_type in _ADDED_COLUMNS.items():
                if column not in present:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} {sql_type}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction; a damaged file is a one-line error and is left as it is."""
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from None
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        except sqlite3.IntegrityError:
            raise
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise UserError(f"run registry {self.path} is locked by another mudpuppy process ({exc})",
                                hint="wait for it to finish and try again") from None
            raise self._unreadable(exc) from None
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None
        finally:
            db.close()

    def _unreadable(self, exc: Exception) -> UserError:
        return UserError(
            f"run registry {self.path} cannot be read ({exc}); it is left untouched",
            hint=f"move it aside (mv {self.path} {self.path}.damaged) and mudpuppy starts a new one; "
            "runs already submitted keep running on their backends",
        )

    def create(
        self,
        *,
        name: str,
        backend: str,
        bundle_hash: str,
        config_path: str,
        run_id: str | None = None,
        launch: str | None = None,
        group_id: str | None = None,
        parent_id: str | None = None,
    ) -> RunRecord:
        for _ in range(5):  # a generated id that is taken gets a fresh one; a given one is refused
            try:
                return self._insert(name=name, backend=backend, bundle_hash=bundle_hash, config_path=config_path,
                                    run_id=run_id or new_run_id(), launch=launch, group_id=group_id,
                                    parent_id=parent_id)
            except sqlite3.IntegrityError:
                if run_id:
                    raise UserError(f"run id {run_id} is already in the registry {self.path}; nothing was changed",
                                    hint="launch again: each launch gets a new random id") from None
        raise UserError(f"could not find a free run id in {self.path}")

    def _insert(self, *, name: str, backend: str, bundle_hash: str, config_path: str, run_id: str,
                launch: str | None, group_id: str | None = None, parent_id: str | None = None) -> RunRecord:
        now = time.time()
        record = RunRecord(
            id=run_id,
            name=name,
            backend=backend,
            handle=None,
            bundle_hash=bundle_hash,
            config_path=config_path,
            status="submitting",
            reason=None,
            attempts=0,
            created=now,
            updated=now,
            output=None,
            launch=launch,
            group_id=group_id,
            parent_id=parent_id,
        )
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, name, backend, handle, bundle_hash, config_path, status, reason, attempts, "
                "created, updated, output, launch, group_id, parent_id) VALUES (:id, :name, :backend, :handle, "
                ":bundle_hash, :config_path, :status, :reason, :attempts, :created, :updated, :output, :launch, "
                ":group_id, :parent_id)",
                record.to_dict(),
            )
        return record

    def update(self, run_id: str, **fields: Any) -> RunRecord:
        allowed = {"handle", "status", "reason", "attempts", "output", "name"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        fields["updated"] = time.time()
        sets = ", ".join(f"{key} = :{key}" for key in fields)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {sets} WHERE id = :id", {**fields, "id": run_id})
        return self.get(run_id)

    def get(self, ref: str) -> RunRecord:
        """A run by id, unique id prefix, or name (the newest run of that name)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (ref,)).fetchone()
            if row is None:
                rows = db.execute("SELECT * FROM runs WHERE id LIKE ? ORDER BY created DESC", (ref + "%",)).fetchall()
                if len(rows) > 1:
                    raise UserError(f"run {ref!r} is ambiguous ({len(rows)} runs match); give more of the id")
                row = rows[0] if rows else None
            if row is None:
                row = db.execute(
                    "SELECT * FROM runs WHERE name = ? ORDER BY created DESC LIMIT 1", (ref,)
                ).fetchone()
        if row is None:
            raise UserError(f"no run {ref!r} in {self.path}", hint="`mudpuppy runs` lists them")
        return RunRecord(**dict(row))

    def list(self, limit: int = 50, backend: str | None = None) -> list[RunRecord]:
        query = "SELECT * FROM runs"
        args: tuple[Any, ...] = ()
        if backend:
            query += " WHERE backend = ?"
            args = (backend,)
        query += " ORDER BY created DESC LIMIT ?"
        with self._connect() as db:
            rows = db.execute(query, (*args, limit)).fetchall()
        return [RunRecord(**dict(r)) for r in rows]

    def group(self, ref: str) -> builtins.list[RunRecord]:
        """The members of sweep ``ref`` (its id or a unique prefix of it), oldest first."""
        with self._connect() as db:
            ids = [r[0] for r in db.execute("SELECT DISTINCT group_id FROM runs WHERE group_id = ? OR group_id LIKE ?",
                                            (ref, ref + "%")).fetchall()]
            if ref in ids:
                ids = [ref]
            if len(ids) > 1:
                raise UserError(f"group {ref!r} is ambiguous ({len(ids)} sweeps match); give more of the id")
            if not ids:
                raise UserError(f"no sweep group {ref!r} in {self.path}",
                                hint="`mudpuppy launch CONFIG --sweep KEY=V1,V2` prints the group id")
            rows = db.execute("SELECT * FROM runs WHERE group_id = ? ORDER BY created, id", (ids[0],)).fetchall()
        return [RunRecord(**dict(r)) for r in rows]
