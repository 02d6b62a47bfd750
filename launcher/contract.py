"""Where the launcher, the backends and the runtime meet: exit codes, mudpuppy's own environment variables
and the bundle layout. Defined once here; the runtime imports this module (it is light), backends too.

Exit codes
    0              the run finished; outputs are complete.
    EXIT_USER_ERROR (2)  bad config/data; retrying cannot help, so backends never retry it.
    EXIT_REQUEUE (75)    preempted: a checkpoint was saved; run the same bundle again and it resumes.
                         75 is EX_TEMPFAIL from sysexits.h ("try again later"), chosen because 137/143 mean
                         "killed" and cannot tell a clean save from a lost machine.
    anything else  a crash (a bug or a lost machine); backends may retry it within ``launch.retries``.
"""

from __future__ import annotations

import os
from pathlib import Path

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_REQUEUE = 75

# Set by every backend for the runtime (plain values only; secrets are never passed through these).
ENV_RUN_ID = "MUDPUPPY_RUN_ID"
ENV_ATTEMPT = "MUDPUPPY_ATTEMPT"  # 0 on the first run, +1 per restart (like SLURM_RESTART_COUNT)
ENV_VOLUME = "MUDPUPPY_VOLUME"
ENV_BUNDLE = "MUDPUPPY_BUNDLE"

# Bundle layout (a tarball; paths inside it).
BUNDLE_CONFIG = "config.yml"
BUNDLE_IMAGE = "image.json"
BUNDLE_DATA_DIR = "files"
BUNDLE_WHEEL_DIR = "wheels"
BUNDLE_SUFFIX = ".tar.gz"
# Where a backend wants relative config paths (data links, outputs) to resolve; default: the current directory.
ENV_WORKDIR = "MUDPUPPY_WORKDIR"
# Where a relative ``output_dir`` / ``dataset_prepared_path`` resolves when it must not be the run folder: the folder
# the user launched from (local; SLURM's submit directory; SSH with a shared filesystem), as ``mudpuppy train`` does.
ENV_OUTPUT_BASE = "MUDPUPPY_OUTPUT_BASE"

# A folder (set by the node launcher) where each worker that saved a preemption checkpoint leaves a marker before
# exiting 75. torchrun reports workers stopped mid-exit as killed by a signal, so exit codes alone can lose the 75.
ENV_REQUEUE_MARKERS = "MUDPUPPY_REQUEUE_MARKERS"
# A shared folder (set by the SLURM script) where each node launcher records its exit code as file ``node<RANK>``:
# with ``srun --kill-on-bad-exit=1`` the first node to exit 75 gets the others killed, and srun then reports the
# killed ones' signal instead of the requeue code.
ENV_NODE_EXITS = "MUDPUPPY_NODE_EXITS"


def anchored_output(value: str) -> str:
    """``value`` (an ``output_dir`` or ``dataset_prepared_path``) resolved against ``$MUDPUPPY_OUTPUT_BASE`` when
    that is set and ``value`` is a relative local path; otherwise unchanged."""
    base = os.environ.get(ENV_OUTPUT_BASE)
    if not base or not value or "://" in value or os.path.isabs(os.path.expanduser(value)):
        return value
    return os.path.join(base, value.removeprefix("./"))


def mark_requeue(rank: int | str) -> None:
    """Record "this worker saved and asks to be rerun" where the node launcher looks (no-op outside one)."""
    folder = os.environ.get(ENV_REQUEUE_MARKERS)
    if folder:
        Path(folder, f"rank{rank}").touch()
