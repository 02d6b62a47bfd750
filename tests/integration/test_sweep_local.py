"""A local sweep runs its members one after another on this machine (they would share its GPUs): the second
member is registered only after the first wrote its final outputs, each into its own folder; `runs --group`
lists both. The stand-in runtime keeps it to seconds; real training per member is in test_sweep_slurm."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import FAKE, mp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
CFG = "examples/tiny-alpaca.yml"


def test_local_sweep_runs_members_one_after_another(project: Path) -> None:
    proc = mp("launch", CFG, "--sweep", "lora_r=4,8", "--launch.entrypoint", FAKE, "--launch.local.python",
              sys.executable, "--launch.env.FAKE_STEPS", "5")
    assert proc.returncode == 0, proc.stderr
    group = proc.stdout.strip().splitlines()[-1]
    rows = {r["name"]: r for r in map(json.loads, mp("runs", "--group", group, "--json").stdout.splitlines())}
    assert set(rows) == {"tiny-alpaca-r4", "tiny-alpaca-r8"} and {r["status"] for r in rows.values()} == {"succeeded"}
    first = project / "outputs/tiny-alpaca/r4/final.txt"
    assert first.read_text() == (project / "outputs/tiny-alpaca/r8/final.txt").read_text() == "steps=5 world=1\n"
    created = {r["id"]: r for r in map(json.loads, mp("runs", "--json").stdout.splitlines())}
    second_created = created[rows["tiny-alpaca-r8"]["id"]]["created"]
    assert first.stat().st_mtime <= second_created  # the second member started after the first had finished
    assert "fake runtime: done" in proc.stdout  # members' logs are followed
