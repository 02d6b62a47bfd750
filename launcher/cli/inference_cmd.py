"""``mudpuppy inference CONFIG [--prompt TEXT | stdin]``: generate with the trained model and training prompt format."""

from __future__ import annotations

import sys

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument, load_with_overrides


@click.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--lora-model-dir", default=None, help="Adapter folder (default: output_dir for LoRA runs).")
@click.option("--base-model", default=None, help="A full HF model folder to use instead (e.g. OUT/merged).")
@click.option("--prompt", default=None, help="The user message; read from stdin (one per line) when omitted.")
@click.option("--image", "images", multiple=True, help="An image for the prompt (multimodal configs; repeatable).")
@click.option("--max-new-tokens", default=64, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.pass_context
def inference(ctx: click.Context, config_path: str, lora_model_dir: str | None, base_model: str | None,
              prompt: str | None, images: tuple[str, ...], max_new_tokens: int, temperature: float) -> None:
    """Answer a prompt with the model trained from CONFIG, formatted exactly as in training."""
    from mudpuppy.runtime.inference import format_prompt, generate, generate_with_images, load_for_inference

    cfg = load_with_overrides(config_path, ctx.args).config
    model, tokenizer = load_for_inference(cfg, lora_model_dir=lora_model_dir, base_model=base_model)
    prompts = [prompt] if prompt is not None else [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for text in prompts:
        if images:
            click.echo(generate_with_images(cfg, model, tokenizer, text, list(images), max_new_tokens=max_new_tokens,
                                            temperature=temperature))
            continue
        rendered = format_prompt(cfg, tokenizer, text)
        click.echo(generate(model, tokenizer, rendered, max_new_tokens=max_new_tokens, temperature=temperature))
