"""A sweep over SSH (a real sshd on 127.0.0.1): members run one after another on the host, each in its own run
folder, where (without a shared filesystem) its outputs are; `gc` over SSH then removes the finished members' uploaded
bundles but keeps their run folders, because their outputs are inside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import mp
from mudpuppy.tests.infra.services import Sshd
from tests.integration.test_launch_ssh import ssh_args

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
CFG = "examples/tiny-alpaca.yml"


def test_ssh_sweep_and_gc_over_ssh(sshd: Sshd, project: Path) -> None:
    proc = mp("launch", CFG, *ssh_args(sshd, project), "--sweep", "lora_r=4,8", "--launch.env.FAKE_STEPS", "3")
    assert proc.returncode == 0, proc.stderr
    group = proc.stdout.strip().splitlines()[-1]
    rows = [json.loads(line) for line in mp("runs", "--group", group, "--json").stdout.splitlines()]
    assert {r["status"] for r in rows} == {"succeeded"} and len(rows) == 2
    remote = project / "remote"
    outputs = {}
    for row in rows:
        name = row["name"].removeprefix("tiny-alpaca-")
        outputs[name] = remote / "runs" / row["id"] / "node0" / "outputs/tiny-alpaca" / name / "final.txt"
        assert outputs[name].read_text() == "steps=3 world=1\n"
    bundles = sorted((remote / "bundles").glob("*.tar.gz"))
    assert len(bundles) == 2  # one per member: their configs differ
    listing = mp("gc")
    assert listing.returncode == 0, listing.stderr
    assert all(str(b) in listing.stdout for b in bundles), listing.stdout
    assert listing.stderr.count("note: kept") == 2 and "runs/" in listing.stderr  # outputs inside the run folders
    assert mp("gc", "--yes").returncode == 0
    assert not any(b.exists() for b in bundles)
    assert all(path.exists() for path in outputs.values())
