"""``mudpuppy plot RUN [RUN...]``: one PNG with the runs' loss, eval loss, learning rate, grad norm and tokens/s."""

from __future__ import annotations

import re
from pathlib import Path

import click


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="PNG to write (default: plot-RUN.png here).")
def plot(runs: tuple[str, ...], out: str | None) -> None:
    """Plot the curves of RUNs (ids, names, or output folders / metrics.jsonl files) overlaid; print the PNG's path."""
    from mudpuppy.launcher import progress, progress_plot
    from mudpuppy.launcher.errors import UserError
    from mudpuppy.launcher.registry import Registry

    named: list[tuple[str, progress.Metrics]] = []
    registry: Registry | None = None
    for ref in runs:
        path = Path(ref)
        if path.exists():
            file = path / progress.METRICS_FILE if path.is_dir() else path
            metrics = progress.read_metrics_file(file)
            label = path.name if path.is_dir() else path.parent.name
        else:
            registry = registry or Registry()
            record = registry.get(ref)
            metrics = progress.newest_metrics(record)
            label = f"{record.name} ({record.id})"
        if metrics is None:
            raise UserError(f"{ref}: no metrics.jsonl reachable from here (output folder, volume)",
                            hint="`mudpuppy status RUN` says where the run writes")
        if not metrics.records:
            raise UserError(f"{ref}: {metrics.source} has no readable records yet")
        named.append((label, metrics))
    target = out or f"plot-{'+'.join(re.sub(r'[^A-Za-z0-9_.-]+', '_', r) for r in runs)[:120]}.png"
    progress_plot.save(progress_plot.figure(named), target)
    click.echo(str(Path(target).resolve()))
