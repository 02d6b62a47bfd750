"""Where each lifecycle command reads a run from, per backend: the text `mudpuppy backends` prints.

Kept next to nothing else on purpose: it is the one place that says what `status`/`runs`/`plot`, `pull` and
`resume` can reach on each backend, and `tests/unit/launcher/test_lifecycle_scope.py` checks claims against the
code paths that implement them (``progress.reachable_metrics``, ``pull.source_for``); resume's refusal of a run
without a volume is ``tests/integration/test_resume.py::test_refusals``.
"""

from __future__ import annotations

# status / runs / plot: metrics.jsonl, first choice first
PROGRESS = {
    "local": "output_dir here; launch.volume",
    "slurm": "output_dir on the shared filesystem; launch.volume; logs",
    "ssh": "output_dir with ssh.shared_fs; launch.volume; logs",
    "ray": "launch.volume; logs",
    "skypilot": "the bucket (launch.volume / skypilot.bucket); logs",
    "modal": "logs (the Modal volume is mounted only in Modal's containers)",
}

# pull: final outputs (and --checkpoints), sha256-checked
PULL = {
    "local": "output_dir here, or launch.volume",
    "slurm": "shared filesystem (local shell) or the login node over SFTP; launch.volume",
    "ssh": "rank 0's host over SFTP; launch.volume",
    "ray": "launch.volume only (workers' disks are not reachable)",
    "skypilot": "the bucket",
    "modal": "the Modal volume through the Modal client",
}

# resume RUN --backend THIS: continues from the newest verified checkpoint on the run's volume
RESUME = {name: "yes, from the run's launch.volume" for name in PULL}
