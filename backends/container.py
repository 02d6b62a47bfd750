"""Running a node's command inside ``launch.image`` with docker or apptainer/singularity, as shell words.

The prefix is rendered as shell text (not argv) because host paths such as ``~/.mudpuppy`` and the caller's
uid must expand on the host. Environment variables, secrets included, are passed by *name* only: docker's
``--env NAME`` copies the value from the docker client's own environment, and apptainer passes the caller's
environment through by default; so no value is ever on a command line (visible in ``ps``) or in the plan.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from mudpuppy.backends.transport import rpath

__all__ = ["container_words"]


def container_words(
    tool: str,
    image: str,
    *,
    mount: str,
    workdir: str,
    env_names: Iterable[str],
    gpus: bool,
    name: str,
    extra: Iterable[str] = (),
) -> list[str]:
    """Shell words that run the command appended after them inside ``image``.

    ``mount`` (the folder holding bundles and runs) is bound at the same path so every path in the node
    command means the same inside and out; the host network is used so torchrun's rendezvous address works.
    """
    q = shlex.quote
    bind = f"{rpath(mount)}:{rpath(mount)}"
    if tool == "docker":
        words = [
            "docker", "run", "--rm", "--init", f"--name={q(name)}", "--network=host", "--ipc=host",
            '--user="$(id -u):$(id -g)"', f"--volume={bind}", f"--workdir={rpath(workdir)}",
        ]
        if gpus:
            words.append("--gpus=all")
        words += [f"--env={q(n)}" for n in sorted(set(env_names))]
    else:  # apptainer / singularity: same CLI; the environment passes through unless --cleanenv
        words = [tool, "exec", f"--bind={bind}", f"--pwd={rpath(workdir)}"]
        if gpus:
            words.append("--nv")
    words += [q(a) for a in extra]
    words.append(q(image))
    return words
