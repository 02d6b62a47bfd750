"""``mudpuppy evaluate CONFIG``: eval loss and perplexity of the trained model on the config's eval data."""

from __future__ import annotations

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument, load_with_overrides


@click.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--lora-model-dir", default=None, help="Adapter folder (default: output_dir for LoRA runs).")
@click.pass_context
def evaluate(ctx: click.Context, config_path: str, lora_model_dir: str | None) -> None:
    """Evaluate the model trained from CONFIG; also writes OUTPUT_DIR/eval_metrics.json."""
    from mudpuppy.runtime.evaluate import evaluate as run_eval

    cfg = load_with_overrides(config_path, ctx.args).config
    for key, value in run_eval(cfg, lora_model_dir=lora_model_dir).items():
        click.echo(f"{key}: {value:.4f}")
