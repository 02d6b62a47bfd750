"""``mudpuppy logs RUN [-f]``: the job's output, from wherever the backend keeps it."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("run")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends.")
def logs(run: str, follow: bool) -> None:
    """Print the output of RUN (id, id prefix or name)."""
    from mudpuppy.launcher.dispatch import iter_logs
    from mudpuppy.launcher.registry import Registry

    for line in iter_logs(Registry().get(run), follow):
        sys.stdout.write(line)
        sys.stdout.flush()
