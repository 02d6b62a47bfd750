"""Hostile values in ``#SBATCH`` options, read by the real sbatch/slurmctld (2-node cluster from tests/infra).

The unit tests run the rendered script under bash with stubs and parse the header with a port of sbatch's
tokenizer; here the real sbatch reads it: a job name and a comment full of shell syntax, quotes and a
backslash must arrive in SLURM's job record exactly as written, and nothing in them may run.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from mudpuppy.tests.infra.helpers import FAKE, mp, one_line_error
from mudpuppy.tests.infra.services import SlurmCluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
CFG = "examples/tiny-alpaca.yml"


def test_sbatch_reads_hostile_options_literally(slurm: SlurmCluster, project: Path) -> None:
    canary = Path("/tmp") / f"pwned-{uuid.uuid4().hex}"
    comment = f"$(touch {canary}) `touch {canary}`; it's \"quoted\" a\\b #not-a-comment"
    name = f"n;touch${{IFS}}{canary}"
    args = ["--backend", "slurm", "--launch.slurm.workdir", str(project / "shared"),
            "--launch.slurm.python", sys.executable, "--launch.slurm.master_port", "29543",
            "--launch.entrypoint", FAKE, "--launch.env.FAKE_STEPS", "1",
            "--launch.env.HOSTILE", f"'$(touch {canary})'",
            "--launch.slurm.extra_directives", json.dumps([f"--comment={comment}"]), "--name", name]
    proc = mp("launch", CFG, *args, "--detach")
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.strip()
    status = json.loads(mp("status", run, "--json", timeout=60).stdout)
    job = status["handle"].rsplit("/", 1)[1]
    record = wait_for(lambda: (out := slurm.run("scontrol", "show", "job", "-o", job).stdout)
                      and "JobState=COMPLETED" in out and out, 90, 0.5, "the job to complete")
    assert f"Comment={comment} " in record or record.rstrip().endswith(f"Comment={comment}"), record
    assert f"JobName={name}-{run} " in record, record
    assert not canary.exists()

    err = one_line_error(mp("launch", CFG, *args[:-2], "--launch.slurm.partition", f"gpu;touch {canary}"))
    assert "sbatch on this machine refused the job" in err and "partition" in err
    assert not canary.exists()
