"""``mudpuppy merge-lora CONFIG [--lora-model-dir D]``: write OUT/merged (base weights + adapter folded in)."""

from __future__ import annotations

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument, load_with_overrides


@click.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--lora-model-dir", default=None, help="Adapter folder (default: lora_model_dir or output_dir).")
@click.option("--out", "out_dir", default=None, help="Folder to write merged/ into (default: output_dir).")
@click.pass_context
def merge_lora(ctx: click.Context, config_path: str, lora_model_dir: str | None, out_dir: str | None) -> None:
    """Merge the LoRA adapter trained from CONFIG into its base model; saves an HF model in OUT/merged."""
    from mudpuppy.runtime.merge import merge_lora as run_merge

    cfg = load_with_overrides(config_path, ctx.args).config
    target = run_merge(cfg, lora_model_dir=lora_model_dir, out_dir=out_dir)
    click.echo(f"merged model written to {target}")
