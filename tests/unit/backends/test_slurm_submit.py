"""Submission failures that need no cluster: no sbatch on PATH. The run is still recorded, as failed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mudpuppy.launcher import dispatch
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"


def test_missing_sbatch_is_one_line_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    bin_dir = tmp_path / "bin"  # a PATH with a shell and nothing else
    bin_dir.mkdir()
    for tool in ("bash", "mkdir", "test"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_dir / tool)
    overrides = {"launch.backend": "slurm", "launch.slurm.workdir": str(tmp_path / "shared"), "launch.name": "nosb"}
    prepared = dispatch.prepare("examples/tiny-alpaca.yml", overrides, "run-nosbatch")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(UserError, match="sbatch not found on this machine") as info:
        dispatch.submit(prepared, "examples/tiny-alpaca.yml", Registry())
    assert "\n" not in info.value.one_line()
    row = Registry().get("run-nosbatch")
    assert row.status == "failed" and row.reason is not None and "sbatch not found" in row.reason
    assert row.handle is None and row.name == "nosb"


class _LoginNode:
    """A stand-in transport for a login node whose $HOME is /home/ada: records commands and the script written."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.script = ""

    def run(self, command: str, *, timeout: float = 60, stdin: str | None = None):  # type: ignore[no-untyped-def]
        from mudpuppy.backends.transport import Result

        self.commands.append(command)
        if command.startswith("cat > "):
            self.script = stdin or ""
        out = {"printf %s \"$HOME\"": "/home/ada"}.get(command, "")
        return Result(0, "4242\n" if "sbatch --parsable" in command else out, "")

    def put(self, local: Path, remote: str) -> None:
        self.commands.append(f"put {remote}")

    def close(self) -> None:
        pass


def test_default_workdir_over_ssh_is_resolved_on_the_login_node(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    overrides = {"launch.backend": "slurm", "launch.slurm.login": "ada@login"}
    prepared = dispatch.prepare("examples/tiny-alpaca.yml", overrides, "run-login")
    assert prepared.plan.extra["home_pending"] and "$HOME/.mudpuppy" in prepared.plan.script  # the dry run
    login = _LoginNode()
    monkeypatch.setattr(prepared.backend, "transport", lambda session=None: login)
    record = dispatch.submit(prepared, "examples/tiny-alpaca.yml", Registry())
    assert record.handle == "slurm://ada@login/4242"
    assert "#SBATCH --output=/home/ada/.mudpuppy/logs/slurm-%j.out" in login.script
    assert "$HOME" not in login.script and "~" not in login.script
    assert any(c.startswith("mkdir -p /home/ada/.mudpuppy/runs/run-login") for c in login.commands), login.commands
    assert record.output == "ada@login:~/outputs/tiny-alpaca"  # sbatch's submit directory: the login shell's home
