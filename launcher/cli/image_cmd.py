"""``mudpuppy image render CONFIG``: the runtime image as a Dockerfile (plus the mudpuppy wheel as build context)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument


@click.group()
def image() -> None:
    """Build recipes for the runtime image, from the same spec every backend uses."""


@image.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--output", "-o", type=click.Path(file_okay=False), default="mudpuppy-image", show_default=True,
              help="Folder for the Dockerfile and the mudpuppy wheel (the docker build context).")
@click.option("--base", help="Base image (overrides launch.image), e.g. nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04.")
@click.option("--torch-index", help="pip index for torch, e.g. https://download.pytorch.org/whl/cu128.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the Dockerfile instead of writing the folder.")
@click.pass_context
def render(ctx: click.Context, config_path: str, output: str, base: str | None, torch_index: str | None,
           to_stdout: bool) -> int:
    """Write OUTPUT/Dockerfile for CONFIG's runtime image; build it with docker or apptainer."""
    from mudpuppy.launcher.cli.options import load_with_overrides
    from mudpuppy.launcher.dockerfile import render_dockerfile
    from mudpuppy.launcher.image import image_spec, mudpuppy_wheel
    from mudpuppy.launcher.registry import cache_dir

    config = load_with_overrides(config_path, list(ctx.args)).config
    wheel = None if to_stdout else mudpuppy_wheel(cache_dir())
    spec = image_spec(config, wheel=f"wheels/{wheel.name}" if wheel else "wheels/mudpuppy.whl")
    if base:
        spec["base_image"] = base
    text = render_dockerfile(spec, source=Path(config_path).name, flash_attn=bool(config.flash_attention),
                             torch_index=torch_index)
    if to_stdout:
        click.echo(text, nl=False)
        return 0
    assert wheel is not None
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, folder / wheel.name)
    (folder / "Dockerfile").write_text(text)
    click.echo(f"wrote {folder / 'Dockerfile'} and {wheel.name}", err=True)
    click.echo(f"  docker build -t mudpuppy-runtime {folder}", err=True)
    click.echo("  apptainer build mudpuppy-runtime.sif docker-daemon://mudpuppy-runtime:latest  # after docker build",
               err=True)
    return 0
