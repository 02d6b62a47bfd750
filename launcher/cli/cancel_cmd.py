"""``mudpuppy cancel RUN``: stop the job everywhere it runs; it is not requeued."""

from __future__ import annotations

import click


@click.command()
@click.argument("run")
@click.option("--keep", is_flag=True, help="Leave the machines the run was given up (SkyPilot: keep the cluster).")
def cancel(run: str, keep: bool) -> None:
    """Cancel RUN (id, id prefix or name)."""
    from mudpuppy.launcher.dispatch import cancel as cancel_run
    from mudpuppy.launcher.registry import Registry

    registry = Registry()
    record = cancel_run(registry.get(run), registry, keep=keep)
    click.echo(f"run {record.id} cancelled")
