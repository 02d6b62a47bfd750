from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mudpuppy.launcher import dispatch
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"


def test_flags_become_launch_overrides_and_none_is_left_out() -> None:
    got = dispatch.flag_overrides(backend="slurm", gpus="H100:8", nodes=2, spot=False, detach=None, name="x")
    assert got == {"launch.backend": "slurm", "launch.gpus": "H100:8", "launch.nodes": 2, "launch.spot": False,
                   "launch.name": "x"}


def test_flags_win_over_the_config_and_plan_is_pure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    cfg = tmp_path / "examples" / "tiny-alpaca.yml"
    cfg.write_text(cfg.read_text() + "launch:\n  backend: slurm\n  nodes: 4\n  slurm: {workdir: /s, partition: a}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    overrides = dispatch.flag_overrides(nodes=2) | {"launch.slurm.partition": "b"}
    first = dispatch.prepare("examples/tiny-alpaca.yml", overrides, "r1")
    again = dispatch.prepare("examples/tiny-alpaca.yml", overrides, "r1")
    assert first.plan == again.plan
    assert "#SBATCH --nodes=2" in first.plan.script and "#SBATCH --partition=b" in first.plan.script
    assert not (tmp_path / "state" / "runs.sqlite").exists()  # preparing (a dry run) records nothing


def test_never_submitted_run_explains_itself(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.sqlite")
    rec = reg.create(name="n", backend="ssh", bundle_hash="h", config_path="c", run_id="x")
    rec = reg.update("x", status="failed", reason="cannot reach h:22")
    with pytest.raises(UserError, match="never submitted .*cannot reach"):
        dispatch.backend_for(rec)
