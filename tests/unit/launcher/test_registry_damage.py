"""A damaged registry file and clashing run ids: one line, and nothing already recorded is changed or lost."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mudpuppy.launcher import registry as registry_module
from mudpuppy.launcher.cli import main
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry, new_run_id

pytestmark = pytest.mark.timeout(120)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def filled(path: Path, rows: int = 400) -> Registry:
    reg = Registry(path)
    for index in range(rows):
        reg.create(name=f"run{index}", backend="local", bundle_hash="ab" * 32, config_path="/c.yml" + "x" * 200)
    return reg


def test_garbage_registry_file_is_one_line_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    path.write_bytes(b"this is not a database, just some text a user saved here by mistake\n" * 50)
    before = digest(path)
    with pytest.raises(UserError) as info:
        Registry(path)
    message = info.value.one_line()
    assert message.startswith(f"run registry {path} cannot be read (file is not a database); it is left untouched")
    assert f"mv {path} {path}.damaged" in message
    assert digest(path) == before


def test_truncated_registry_is_one_line_on_every_command(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    filled(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a disk that filled up, a copy cut short
    before = digest(path)
    pattern = rf"run registry {re.escape(str(path))} cannot be read \(database disk image is malformed\)"
    with pytest.raises(UserError, match=pattern):
        Registry(path)
    assert digest(path) == before


def test_damaged_registry_through_the_cli_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path))
    (tmp_path / "runs.sqlite").write_bytes(b"\0garbage" * 512)
    with pytest.raises(SystemExit) as info:
        main(["runs"])
    _, err = capsys.readouterr()
    assert info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "cannot be read (file is not a database)" in err


def test_run_ids_do_not_repeat_in_a_tight_loop() -> None:
    ids = [new_run_id() for _ in range(200_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{10}", i) for i in ids[:100])


def test_run_ids_from_parallel_processes_do_not_clash() -> None:
    probe = "from mudpuppy.launcher.registry import new_run_id\nprint('\\n'.join(new_run_id() for _ in range(50000)))"
    procs = [subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    ids = [line for proc in procs for line in proc.communicate(timeout=100)[0].split()]
    assert len(ids) == 200_000 and len(set(ids)) == len(ids)


def test_given_duplicate_id_is_refused_and_the_first_run_kept(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "runs.sqlite")
    first = reg.create(name="a", backend="slurm", bundle_hash="ab" * 32, config_path="/a.yml", run_id="r-1")
    reg.update("r-1", handle="slurm://local/7", status="running")
    with pytest.raises(UserError, match="run id r-1 is already in the registry .*; nothing was changed"):
        reg.create(name="b", backend="local", bundle_hash="cd" * 32, config_path="/b.yml", run_id="r-1")
    kept = reg.get("r-1")
    assert (kept.name, kept.backend, kept.handle, kept.created) == ("a", "slurm", "slurm://local/7", first.created)


def test_generated_id_that_is_taken_gets_a_fresh_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "runs.sqlite")
    reg.create(name="a", backend="local", bundle_hash="ab" * 32, config_path="/a.yml", run_id="same")
    offered = iter(["same", "same", "fresh"])
    monkeypatch.setattr(registry_module, "new_run_id", lambda: next(offered))
    record = reg.create(name="b", backend="local", bundle_hash="cd" * 32, config_path="/b.yml")
    assert record.id == "fresh"
    assert reg.get("same").name == "a"
    assert sqlite3.connect(reg.path).execute("SELECT COUNT(*) FROM runs").fetchone() == (2,)
