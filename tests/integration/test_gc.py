"""``mudpuppy gc`` on a registry with finished and unfinished runs, locally and on the real SLURM cluster's shared
workdir: the dry listing removes nothing; ``--yes`` removes the finished runs' bundles (here and on the workdir),
their SLURM run folders and a venv no unfinished run uses, while every output folder, the unfinished run's
folder with its checkpoint, its bundle and the venv its script names all survive."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import FAKE, mp
from mudpuppy.tests.infra.services import SlurmCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
CFG = "examples/tiny-alpaca.yml"


def _status(run: str) -> dict:
    return json.loads(mp("status", run, "--json", timeout=60).stdout)


def _bundle(run: str) -> str:
    return json.loads(next(line for line in mp("runs", "--json").stdout.splitlines()
                           if json.loads(line)["id"] == run))["bundle_hash"][:16] + ".tar.gz"


def test_gc_removes_what_finished_runs_left_and_keeps_outputs_and_live_runs(slurm: SlurmCluster,
                                                                             project: Path) -> None:
    shared = project / "shared"
    slurm_args = ["--backend", "slurm", "--launch.slurm.workdir", str(shared), "--launch.slurm.python",
                  sys.executable, "--launch.entrypoint", FAKE]
    done = mp("launch", CFG, *slurm_args, "--output_dir", "outputs/done", "--launch.env.FAKE_STEPS", "2",
              "--detach").stdout.strip()
    live = mp("launch", CFG, *slurm_args, "--output_dir", "outputs/live", "--launch.env.FAKE_STEPS", "2000",
              "--launch.env.FAKE_STEP_S", "0.1", "--detach").stdout.strip()
    local = mp("launch", CFG, "--launch.entrypoint", FAKE, "--output_dir", "outputs/local", "--detach",
               "--launch.env.FAKE_STEPS", "2", "--launch.local.python", sys.executable).stdout.strip()
    for run in (done, local):
        wait_for(lambda r=run: _status(r)["status"] == "succeeded", 90, 1, f"finished run {run}")
    log = shared / "logs" / f"slurm-{_status(live)['handle'].rsplit('/', 1)[1]}.out"
    wait_for(lambda: log.exists() and "step 3/" in log.read_text(), 90, 0.5, "the live run to train")
    # a preemption notice: the live run saves its checkpoint in its run folder, requeues and goes on from it
    assert slurm.run("scancel", "--signal=USR1", "--batch", _status(live)["handle"].rsplit("/", 1)[1]).returncode == 0
    wait_for(lambda: "resumed from step" in log.read_text(), 90, 0.5, "the live run to resume")
    checkpoint = shared / "runs" / live / "fake-ckpt-rank0.txt"
    saved = checkpoint.read_text()
    assert _status(live)["status"] == "running"
    # the live run's environment, as its own script would name it (a dry run without launch.slurm.python)
    script = mp("launch", CFG, "--backend", "slurm", "--launch.slurm.workdir", str(shared), "--output_dir",
                "outputs/live", "--dry-run").stdout
    live_venv = re.search(r"environment: venv (\S+)\"", script).group(1)  # type: ignore[union-attr]
    Path(live_venv).mkdir(parents=True)
    stale_venv = shared / "venvs" / "0000stale0000000"
    stale_venv.mkdir()
    (shared / "venvs" / "0000stale0000000.lock").touch()

    bundles = {run: _bundle(run) for run in (done, live, local)}
    keep = [project / "outputs/done/final.txt", project / "outputs/local/final.txt", checkpoint,
            shared / "bundles" / bundles[live], project / "state/bundles" / bundles[live], Path(live_venv),
            project / "state/runs" / local]  # a local run's folder holds its logs: `mudpuppy logs` reads them
    gone = [shared / "runs" / done, shared / "bundles" / bundles[done], project / "state/bundles" / bundles[done],
            project / "state/bundles" / bundles[local], project / "state/bundles" / bundles[local].removesuffix(
                ".tar.gz"), stale_venv, shared / "venvs" / "0000stale0000000.lock"]
    for path in keep + gone:
        assert path.exists(), path

    listing = mp("gc")
    assert listing.returncode == 0, listing.stderr
    for path in gone:
        assert str(path) in listing.stdout and path.exists(), (path, listing.stdout)  # listed, not removed
    for path in keep:
        assert f"{path}  (" not in listing.stdout, (path, listing.stdout)

    removed = mp("gc", "--yes")
    assert removed.returncode == 0, removed.stderr
    for path in gone:
        assert not path.exists(), (path, removed.stderr)
    for path in keep:
        assert path.exists(), (path, removed.stderr)
    assert int(checkpoint.read_text()) >= int(saved)  # the live run's checkpoint, still its own
    assert _status(live)["status"] == "running"
    assert mp("gc").stdout.strip() == "nothing to clean up"
    assert mp("cancel", live).returncode == 0
