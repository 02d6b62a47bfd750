from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry, cache_dir, state_dir

pytestmark = pytest.mark.timeout(300)


def test_state_and_cache_dirs_follow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "s"))
    assert state_dir() == tmp_path / "s"
    monkeypatch.delenv("MUDPUPPY_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "mudpuppy"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MUDPUPPY_CACHE_DIR", raising=False)
    assert cache_dir() == tmp_path / "cache" / "mudpuppy"


def test_create_update_get(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "runs.sqlite")
    rec = reg.create(name="tiny", backend="slurm", bundle_hash="ab" * 32, config_path="/c.yml", run_id="r-1")
    assert rec.status == "submitting" and rec.attempts == 0
    rec = reg.update("r-1", handle="slurm://local/12", status="running", attempts=2)
    assert (rec.handle, rec.status, rec.attempts) == ("slurm://local/12", "running", 2)
    assert rec.updated >= rec.created
    assert reg.get("r-") == rec  # unique prefix
    assert reg.get("tiny").id == "r-1"  # by name
    with pytest.raises(ValueError):
        reg.update("r-1", bundle_hash="x")


def test_lookup_errors_are_one_line(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "runs.sqlite")
    for i in range(2):
        reg.create(name=f"n{i}", backend="local", bundle_hash="h", config_path="c", run_id=f"run-{i}")
    with pytest.raises(UserError, match="ambiguous"):
        reg.get("run-")
    with pytest.raises(UserError, match="no run 'nope'"):
        reg.get("nope")


def test_list_newest_first_and_filter(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "runs.sqlite")
    reg.create(name="a", backend="local", bundle_hash="h", config_path="c", run_id="1")
    reg.create(name="b", backend="slurm", bundle_hash="h", config_path="c", run_id="2")
    assert [r.id for r in reg.list()] == ["2", "1"]
    assert [r.id for r in reg.list(backend="local")] == ["1"]


def test_a_registry_written_before_groups_and_parents_gains_the_columns_and_keeps_its_rows(tmp_path):
    import sqlite3

    path = tmp_path / "runs.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT NOT NULL, backend TEXT NOT NULL, handle TEXT, "
        "bundle_hash TEXT NOT NULL, config_path TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, "
        "attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL, output TEXT, launch TEXT)"
    )
    old.execute("INSERT INTO runs VALUES ('r-old', 'n', 'local', NULL, 'h', 'c.yml', 'succeeded', NULL, 1, 1, 1, "
                "NULL, NULL)")
    old.commit()
    old.close()

    registry = Registry(path)
    assert registry.get("r-old").group_id is None
    child = registry.create(name="n", backend="slurm", bundle_hash="h", config_path="c.yml", group_id="g1",
                            parent_id="r-old")
    again = Registry(path).get(child.id)
    assert (again.group_id, again.parent_id) == ("g1", "r-old")
