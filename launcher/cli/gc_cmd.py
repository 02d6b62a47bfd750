"""``mudpuppy gc [--yes]``: list (and with --yes remove) what finished runs left behind; see ``launcher.gc``."""

from __future__ import annotations

import click


@click.command()
@click.option("--yes", "-y", is_flag=True, help="Remove what is listed (default: only list it).")
def gc(yes: bool) -> int:
    """Bundles, remote run folders, stale venvs and SkyPilot clusters no unfinished run needs. Never outputs or
    checkpoints."""
    from mudpuppy.launcher.cli import warn
    from mudpuppy.launcher.gc import collect, remove
    from mudpuppy.launcher.registry import Registry

    found = collect(Registry())
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    if not found.items:
        click.echo("nothing to clean up")
        return 0
    for item in found.items:
        click.echo(f"{item.kind:<10}  {item.where:<12}  {item.path}  ({item.why})")
    if not yes:
        click.echo(f"{len(found.items)} item(s); `mudpuppy gc --yes` removes them", err=True)
        return 0
    failed = 0
    for item, problem in remove(found.items):
        if problem:
            failed += 1
            warn(f"could not remove {item.path} ({item.where}): {problem}")
        else:
            click.echo(f"removed: {item.action}" + ("" if item.where == "here" else f" on {item.where}"), err=True)
    click.echo(f"removed {len(found.items) - failed} of {len(found.items)} item(s)", err=True)
    return 1 if failed else 0
