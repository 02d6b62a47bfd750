"""``launch --sweep KEY=V1,V2``: a grid of configs, one member per combination, checked before anything is sent.

Why members are whole configs: each member is an ordinary run (its own run id, bundle, output folder and volume
prefix), so everything that works for one run (status, logs, cancel, requeue, resume) works per member. The
values are typed by the config schema exactly as ``--key value`` overrides are; every member is validated up
front so a bad key or value is one line before the first submission.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mudpuppy.launcher.errors import ConfigError, UserError

# Short names for the keys people sweep most, so member folders read like ``lr2e-4_r16``.
SHORT_NAMES = {
    "learning_rate": "lr",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "num_epochs": "ep",
    "max_steps": "steps",
    "micro_batch_size": "mbs",
    "gradient_accumulation_steps": "ga",
    "weight_decay": "wd",
    "warmup_steps": "warmup",
    "warmup_ratio": "warmup",
    "sequence_len": "seq",
    "seed": "seed",
}
# Keys a sweep may not vary: the group shares its launch settings, and the output folder is set per member.
FIXED_PREFIXES = ("launch.", "output_dir")


@dataclass(frozen=True)
class Axis:
    key: str
    texts: tuple[str, ...]  # the values as typed on the command line


@dataclass(frozen=True)
class Member:
    index: int
    name: str                       # readable and filesystem-safe: lr2e-4_r16
    values: dict[str, str]          # key -> value as typed
    overrides: dict[str, Any] = field(default_factory=dict)  # everything this member's config gets


def parse_axes(specs: list[str]) -> list[Axis]:
    """``["learning_rate=1e-4,2e-4", "lora_r=8,16"]`` -> axes; malformed specs are one line each."""
    axes: list[Axis] = []
    for spec in specs:
        key, eq, rest = spec.partition("=")
        key = key.strip().removeprefix("--")
        if not eq or not key or not rest.strip():
            raise UserError(f"--sweep {spec!r}: expected KEY=V1,V2,... (e.g. --sweep learning_rate=1e-4,2e-4)")
        if key.startswith(FIXED_PREFIXES):
            raise UserError(f"--sweep {key}: a sweep cannot vary {key} (the group shares launch settings and each "
                            "member gets its own output_dir)", hint=f"pass it once as --{key} VALUE")
        if any(a.key == key for a in axes):
            raise UserError(f"--sweep {key} is given twice", hint="list all its values in one --sweep KEY=V1,V2")
        texts = tuple(v.strip() for v in _split_top_level(rest))
        if any(not t for t in texts):
            raise UserError(f"--sweep {spec!r}: an empty value (two commas in a row or a trailing comma)")
        if len(set(texts)) != len(texts):
            raise UserError(f"--sweep {spec!r}: a value is listed twice")
        axes.append(Axis(key, texts))
    return axes


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside ``[...]`` / ``{...}``, so a list value such as ``[q_proj,v_proj]`` stays whole."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def typed(key: str, text: str) -> Any:
    """The value as ``--KEY TEXT`` would give it (YAML scalar; pydantic types it against the schema)."""
    from mudpuppy.launcher.config import parse_override_args

    return next(iter(parse_override_args([f"--{key}={text}"]).values()))


def member_name(values: dict[str, str]) -> str:
    parts = []
    for key, text in values.items():
        short = SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])
        parts.append(short + re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-"))
    return "_".join(parts)


def expand(config_path: str, base: dict[str, Any], specs: list[str]) -> list[Member]:
    """Every combination of the axes as a member whose overrides are ``base`` + its values + its own output
    folder (``output_dir/NAME``), run name (``NAME-MEMBER``) and volume prefix (``volume/NAME``)."""
    from mudpuppy.launcher.config import load_config

    axes = parse_axes(specs)
    if not axes:
        raise UserError("no --sweep given")
    for axis in axes:  # each value on its own first: the error names the one bad value
        for text in axis.texts:
            try:
                load_config(config_path, {**base, axis.key: typed(axis.key, text)})
            except ConfigError as exc:
                raise UserError(f"--sweep {axis.key}={text}: {exc.lines()[0]}") from None
    config = load_config(config_path, dict(base)).config
    run_name = config.launch.name or Path(config_path.split("://")[-1]).stem
    members = []
    for index, combo in enumerate(itertools.product(*(a.texts for a in axes))):
        values = dict(zip((a.key for a in axes), combo, strict=True))
        name = member_name(values)
        overrides = {**base, **{k: typed(k, v) for k, v in values.items()},
                     "output_dir": f"{config.output_dir.rstrip('/')}/{name}", "launch.name": f"{run_name}-{name}"}
        if config.launch.volume:
            overrides["launch.volume"] = f"{config.launch.volume.rstrip('/')}/{name}"
        members.append(Member(index, name, values, overrides))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise UserError(f"--sweep: two members would share the folder name {_first_duplicate(names)!r}",
                        hint="use values that differ as text")
    return members


def _first_duplicate(names: list[str]) -> str:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""


__all__ = ["Axis", "Member", "expand", "member_name", "parse_axes"]
