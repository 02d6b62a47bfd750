"""``mudpuppy config show|validate|schema``."""

from __future__ import annotations

import json

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument, load_with_overrides


@click.group()
def config() -> None:
    """Show, validate or export the schema of a config."""


@config.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--all", "show_all", is_flag=True, help="Also print keys left at null.")
@click.pass_context
def show(ctx: click.Context, config_path: str, show_all: bool) -> None:
    """Print CONFIG fully resolved: your keys, overrides (--key value) and every default."""
    import yaml

    loaded = load_with_overrides(config_path, ctx.args)
    data = loaded.config.model_dump(mode="json", exclude_none=not show_all)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip()
    click.echo("\n".join(_explain(line, loaded.config) for line in text.splitlines()))


def _explain(line: str, cfg: object) -> str:
    """A comment on values whose meaning depends on their size, so ``show`` says how they will be read."""
    size = getattr(cfg, "val_set_size", None)
    if line.startswith("val_set_size:") and size:
        if size > 1:
            return f"{line}  # > 1: a row count, as in Axolotl: {int(size)} rows held out for evaluation"
        return f"{line}  # a fraction: {size:.1%} of the rows held out for evaluation"
    return line


@config.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--strict-keys", is_flag=True,
              help="Unknown keys are errors, not warnings (same as MUDPUPPY_STRICT_KEYS=1 for every command).")
@click.pass_context
def validate(ctx: click.Context, config_path: str, strict_keys: bool) -> None:
    """Check CONFIG (names, types, conflicts) without running anything."""
    from mudpuppy.launcher.errors import ConfigError

    try:
        loaded = load_with_overrides(config_path, ctx.args, strict_keys=strict_keys or None)
    except ConfigError as exc:
        click.echo(f"{config_path}: {len(exc.problems)} problem(s)" + (f"; {exc.summary}" if exc.summary else ""))
        raise
    cfg = loaded.config
    mode = cfg.rl or ("reward model" if cfg.reward_model
                      else "process reward model" if cfg.process_reward_model else "sft")
    tuning = cfg.adapter or "full fine-tune"
    datasets = len(cfg.datasets or [])
    click.echo(f"{config_path}: ok ({mode}, {tuning}, {datasets} dataset(s), backend {cfg.launch.backend}); "
               f"{loaded.summary()}")


@config.command()
@click.option("--indent", default=2, show_default=True)
def schema(indent: int) -> None:
    """Print the JSON Schema of the config (for editor completion and validation)."""
    from mudpuppy.launcher.config.schema import Config

    doc = Config.model_json_schema()
    doc["title"] = "mudpuppy config"
    click.echo(json.dumps(doc, indent=indent))
