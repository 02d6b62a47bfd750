"""Hostile ``launch:`` values through the real ssh backend (sshd on 127.0.0.1): the host script goes through
fabric, the remote login shell and ``bash -c``, and every value must still arrive as written, running nothing.

The job's entrypoint is ``tests.infra.secret_probe``, which records the environment values it received.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import mp
from mudpuppy.tests.infra.services import Sshd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
CFG = "examples/tiny-alpaca.yml"


def test_ssh_job_gets_hostile_values_literally(sshd: Sshd, project: Path) -> None:
    canary = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    hostile = [f"$(touch {canary})", f"`touch {canary}`", f"x'; touch {canary}; echo '", f'x"; touch {canary}"',
               f"a;touch {canary}", "two words * ?", "back\\slash $HOME"]
    out = project / "probe.json"
    env = {f"MP_PROBE_PLAIN_{i}": value for i, value in enumerate(hostile)}
    # the sshd session does not inherit our environment: let the job import this same tree
    extra = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    args = ["--backend", "ssh", "--launch.ssh.hosts", f"[{sshd.host}]", "--launch.ssh.key_file", str(sshd.key_file),
            "--launch.ssh.known_hosts", str(sshd.known_hosts), "--launch.ssh.python", sys.executable,
            "--launch.ssh.workdir", str(project / "remote $(touch pwned-wd)"), "--launch.ssh.connect_timeout", "5",
            "--launch.entrypoint", "mudpuppy.tests.infra.secret_probe", "--launch.env",
            json.dumps({"MP_PROBE_OUT": str(out), **extra, **env}), "--launch.secrets", "[MP_PROBE_SECRET]",
            "--name", f"inj{hostile[4]}"]
    proc = mp("launch", CFG, *args, env={"MP_PROBE_SECRET": hostile[2]})
    logs = "".join(p.read_text() for p in project.rglob("output.log"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs[-3000:]
    seen = json.loads(out.read_text())
    assert seen["plain"] == env
    assert seen["sha256"] == hashlib.sha256(hostile[2].encode()).hexdigest()
    assert not canary.exists()
    assert not [p for p in project.rglob("pwned*")]
    assert (project / "remote $(touch pwned-wd)" / "bundles").is_dir()
