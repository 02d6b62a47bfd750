"""``mudpuppy backends``: what each backend can and cannot do."""

from __future__ import annotations

import click


@click.command()
def backends() -> None:
    """Print the capability matrix of the available backends."""
    from rich.console import Console
    from rich.table import Table

    from mudpuppy.backends.base import BACKENDS, backend_class

    table = Table(title="backends")
    for column in ("backend", "multi-node", "cancel", "logs", "follow", "requeue", "notes"):
        table.add_column(column)
    yes = {True: "[green]yes[/]", False: "[red]no[/]"}
    for name in sorted(BACKENDS):
        try:
            caps = backend_class(name).capabilities
        except ImportError as exc:
            table.add_row(name, "", "", "", "", "", f"unavailable: {exc}")
            continue
        table.add_row(name, yes[caps.multi_node], yes[caps.cancel], yes[caps.logs], yes[caps.follow_logs],
                      yes[caps.requeue], caps.notes)
    console = Console()
    console.print(table)
    # A second table so the first keeps its width: how each backend runs a sweep and what `gc` cleans there.
    from mudpuppy.launcher.gc import GC_SCOPE
    from mudpuppy.launcher.sweep_launch import SWEEP_MODES

    more = Table(title="sweeps (launch --sweep) and cleanup (gc)")
    for column in ("backend", "sweep", "gc"):
        more.add_column(column)
    for name in sorted(BACKENDS):
        more.add_row(name, SWEEP_MODES.get(name, "[red]no[/]"), GC_SCOPE.get(name, "[red]no[/]"))
    console.print(more)
    from mudpuppy.launcher import lifecycle_scope as scope

    life = Table(title="after submit: progress (status, runs, plot), pull, resume --backend")
    for column in ("backend", "progress from", "pull from", "resume onto"):
        life.add_column(column)
    for name in sorted(BACKENDS):
        life.add_row(name, scope.PROGRESS.get(name, "[red]no[/]"), scope.PULL.get(name, "[red]no[/]"),
                     scope.RESUME.get(name, "[red]no[/]"))
    console.print(life)
