"""``mudpuppy pull RUN [--to DIR] [--checkpoints]``: the run's outputs here, each file checked against its manifest."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run")
@click.option("--to", "dest", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to copy into (default: ./RUN_ID). Rerun the same command to finish an interrupted pull.")
@click.option("--checkpoints", is_flag=True, help="Also copy every complete checkpoint (sha256 verified).")
@click.option("--quiet", "-q", is_flag=True, help="Only the summary line.")
def pull(run: str, dest: Path | None, checkpoints: bool, quiet: bool) -> int:
    """Copy RUN's final outputs from wherever it wrote them (volume, remote workdir, shared filesystem, Modal
    volume, bucket) into a local folder, verifying each file's sha256 against the run's manifest."""
    from mudpuppy.launcher.pull import pull as do_pull
    from mudpuppy.launcher.pull import source_for
    from mudpuppy.launcher.registry import Registry

    record = Registry().get(run)
    source = source_for(record)
    target = dest or Path(record.id)
    click.echo(f"pulling run {record.id} from {source.url}", err=True)
    report = do_pull(source, target, checkpoints=checkpoints, say=None if quiet else lambda s: click.echo(s, err=True))
    close = getattr(source, "close", None)
    if close is not None:
        close()
    click.echo(report.line())
    return 0
