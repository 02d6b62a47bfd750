"""``mudpuppy fetch``: copy bundled files out of the package, like ``axolotl fetch examples``."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from mudpuppy.launcher.errors import UserError

# name -> folder under mudpuppy/templates
FETCHABLE = {"examples": "examples", "deepspeed_configs": "deepspeed"}


def templates_dir() -> Path:
    import mudpuppy.templates

    return Path(mudpuppy.templates.__file__).resolve().parent


@click.command()
@click.argument("what", type=click.Choice(sorted(FETCHABLE)))
@click.option("--dest", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder to copy into; WHAT becomes a subfolder of it.")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def fetch(what: str, dest: str, force: bool) -> None:
    """Copy the bundled WHAT (examples: configs, tiny model, data) into DEST/WHAT."""
    source = templates_dir() / FETCHABLE[what]
    if not source.is_dir():
        raise UserError(f"this mudpuppy install has no bundled {what} ({source} is missing); reinstall mudpuppy")
    target = Path(dest) / what
    copied = skipped = 0
    for path in sorted(source.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        out = target / path.relative_to(source)
        if out.exists() and not force:
            skipped += 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out)
        copied += 1
    note = f", {skipped} already there (use --force to overwrite)" if skipped else ""
    click.echo(f"copied {copied} file(s) to {target}{note}")
