"""A stand-in for ``docker`` / ``apptainer`` on an SSH test host: records its argv, then runs the inner command.

Invoked as ``python -m mudpuppy.tests.infra.fake_container CALLS_JSONL TOOL ARGS...`` by a tiny wrapper named
``docker`` or ``apptainer`` on the host's PATH. Like the real tools it hands the container only what they would:
docker passes just the variables named by ``--env NAME`` (plus PATH), apptainer the caller's whole environment;
``--workdir`` / ``--pwd`` set the directory. Everything else (image, mounts, GPUs) is recorded, not emulated.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    calls, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(calls, "a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": args}) + "\n")
    verb, rest = args[0], args[1:]
    if (tool, verb) not in (("docker", "run"), ("apptainer", "exec"), ("singularity", "exec")):
        print(f"fake {tool}: unsupported {verb}", file=sys.stderr)
        return 125
    options: list[str] = []
    while rest and rest[0].startswith("-"):
        options.append(rest.pop(0))
    image, command = rest[0], rest[1:]
    del image
    if tool == "docker":
        names = [o.split("=", 1)[1] for o in options if o.startswith("--env=")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update({n: os.environ[n] for n in names if n in os.environ})
        workdir = next(o.split("=", 1)[1] for o in options if o.startswith("--workdir="))
    else:
        env = dict(os.environ)
        workdir = next(o.split("=", 1)[1] for o in options if o.startswith("--pwd="))
    os.chdir(workdir)
    os.execvpe(command[0], command, env)
    return 127  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
