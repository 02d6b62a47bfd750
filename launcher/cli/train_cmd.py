"""``mudpuppy train CONFIG [--key value ...]``: train here, in this process (the same runtime every backend runs)."""

from __future__ import annotations

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument


@click.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.pass_context
def train(ctx: click.Context, config_path: str) -> int:
    """Fine-tune on this machine from CONFIG (or a bundle); --key value overrides any config key.

    Exits 0 when done, 75 when a SIGTERM/SIGUSR1 made it save a checkpoint and stop (run it again to resume
    with auto_resume_from_checkpoints: true), 2 on a config or data problem.
    """
    from mudpuppy.launcher.cli import warn
    from mudpuppy.launcher.config import parse_override_args
    from mudpuppy.runtime.entry import run_location

    code: int = run_location(config_path, parse_override_args(ctx.args), warn=warn)
    return code
