"""Shared click pieces: the config argument with free-form ``--key value`` overrides."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

OVERRIDE_CONTEXT = {"ignore_unknown_options": True, "allow_extra_args": True}


def config_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("config_path", metavar="CONFIG")(func)


def load_with_overrides(config_path: str, extra_args: list[str], *, strict_keys: bool | None = None) -> Any:
    """Load CONFIG with ``--key value`` overrides typed by the schema, printing each warning once."""
    from mudpuppy.launcher.cli import warn
    from mudpuppy.launcher.config import load_config, parse_override_args
    from mudpuppy.launcher.errors import ConfigError

    try:
        loaded = load_config(config_path, parse_override_args(extra_args), strict_keys=strict_keys)
    except ConfigError as exc:  # the warnings found before the problems still matter to the user
        for line in exc.warnings:
            warn(line)
        raise
    for line in loaded.warnings:
        warn(line)
    return loaded
