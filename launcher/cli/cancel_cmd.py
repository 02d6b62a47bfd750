"""``mudpuppy cancel RUN``: stop the job everywhere it runs; it is not requeued."""

from __future__ import annotations

import click


@click.command()
@click.argument("run")
def cancel(run: str) -> None:
    """Cancel RUN (id, id prefix or name)."""
    from mudpuppy.launcher.dispatch import cancel as cancel_run
    from mudpuppy.launcher.registry import Registry

    registry = Registry()
    record = cancel_run(registry.get(run), registry)
    click.echo(f"run {record.id} cancelled")
