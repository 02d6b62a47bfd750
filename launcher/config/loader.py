"""Turn a config file (plus CLI overrides) into a validated ``Config``, or one line per problem.

Order matters: names are checked before types so a typo reads "unknown key 'lora_alpah' (did you mean
'lora_alpha'?)" rather than a pydantic dump, and Axolotl keys we do not implement are dropped with one warning
each before pydantic ever sees them.

An unknown key in the file, in a section Axolotl defines, is a warning and is dropped: Axolotl ignores such keys
silently, and its own examples carry a few misspellings (``adam_eps``, ``context_parapllel_size``) that must not stop
a config that runs there. ``MUDPUPPY_STRICT_KEYS=1`` (``config validate --strict-keys``) makes them errors. An
unknown key in mudpuppy's own ``launch:`` section or in a ``--key`` override is always an error: nothing upstream
defines those, so a misspelling there can only be a mistake.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mudpuppy.launcher.config import axolotl_keys, unsupported
from mudpuppy.launcher.config.checks import review
from mudpuppy.launcher.config.schema import Config
from mudpuppy.launcher.config.schema.adapter import LoftQConfig, PeftConfig
from mudpuppy.launcher.config.schema.datasets import DatasetConfig, UserDefinedFormat
from mudpuppy.launcher.config.schema.model import SpecialTokens
from mudpuppy.launcher.config.schema.rl import TRLSection
from mudpuppy.launcher.config.source import ConfigSource, KeyPath, parse_yaml, read_source
from mudpuppy.launcher.errors import ConfigError, UserError

STRICT_KEYS_ENV = "MUDPUPPY_STRICT_KEYS"


@dataclass
class LoadedConfig:
    config: Config
    source: ConfigSource
    warnings: list[str] = field(default_factory=list)
    used: int = 0           # keys (at any depth) the schema implements
    unsupported: int = 0    # Axolotl keys and plugins loaded but not acted on, each with a warning

    def summary(self) -> str:
        return f"{self.used} keys used, {self.unsupported} unsupported"


@dataclass
class _Tally:
    warnings: list[str] = field(default_factory=list)
    used: int = 0
    unsupported: int = 0

    def summary(self) -> str:
        return f"{self.used} keys used, {self.unsupported} unsupported"


def load_config(
    location: str | Path, overrides: dict[str, Any] | None = None, *, strict_keys: bool | None = None
) -> LoadedConfig:
    """``strict_keys``: unknown keys are errors; None reads ``MUDPUPPY_STRICT_KEYS``."""
    source = read_source(location)
    return validate_source(source, overrides or {}, strict_keys=strict_keys)


def load_config_text(
    text: str, name: str = "<config>", overrides: dict[str, Any] | None = None, *, strict_keys: bool | None = None
) -> LoadedConfig:
    return validate_source(parse_yaml(text, name), overrides or {}, strict_keys=strict_keys)


def validate_source(
    source: ConfigSource, overrides: dict[str, Any], *, strict_keys: bool | None = None
) -> LoadedConfig:
    problems: list[str] = []
    tally = _Tally()
    if isinstance(source.data, dict) and source.data.get("strict") is True:
        # Axolotl's strict: true lets the command line change only keys the file already has
        for dotted in [k for k in overrides if k.split(".")[0] not in source.data]:
            overrides = {k: v for k, v in overrides.items() if k != dotted}
            tally.warnings.append(f"--{dotted}: ignored because the config sets strict: true and has no "
                                  f"{dotted.split('.')[0]} key")
    override_paths = _apply_overrides(source.data, overrides)
    given = frozenset(k for k in source.data if isinstance(k, str)) if isinstance(source.data, dict) else frozenset()

    def where(path: KeyPath) -> str:
        if path[:1] in override_paths or path in override_paths:
            return "--" + ".".join(str(p) for p in path)
        return source.where(path)

    strict = os.environ.get(STRICT_KEYS_ENV, "") not in ("", "0") if strict_keys is None else strict_keys
    _check_names(source.data, Config, (), where, problems, tally, strict=strict, overrides=override_paths)
    if problems:
        raise ConfigError(problems, warnings=tally.warnings, summary=tally.summary())
    try:
        config = Config.model_validate(source.data)
    except ValidationError as exc:
        raise ConfigError([_describe(err, where) for err in exc.errors()], warnings=tally.warnings,
                          summary=tally.summary()) from None
    found, cautions = review(config, given)
    for path, message in cautions:
        tally.warnings.append(f"{where(path)}: {_dotted(path)}: {message}")
        tally.unsupported += path[:1] == ("plugins",)
    for path, message in found:
        problems.append(f"{where(path)}: {_dotted(path)}: {message}")
    if problems:
        raise ConfigError(problems, warnings=tally.warnings, summary=tally.summary())
    tally.warnings.extend(_remote_code_warnings(config, where))
    return LoadedConfig(config=config, source=source, warnings=tally.warnings, used=tally.used,
                        unsupported=tally.unsupported)


def _remote_code_warnings(config: Config, where: Any) -> list[str]:
    """``trust_remote_code`` runs Python from a hub repository on every node: say once whose code it is."""
    out = []
    if config.trust_remote_code:
        names = dict.fromkeys(n for n in (config.base_model, config.base_model_config, config.tokenizer_config) if n)
        out.append(f"{where(('trust_remote_code',))}: trust_remote_code: true runs the Python code shipped with "
                   f"{', '.join(names)} (its modeling and tokenizer files) on every node; only use it for code "
                   "you trust")
    for key in ("datasets", "test_datasets"):
        for index, ds in enumerate(getattr(config, key) or []):
            if ds.trust_remote_code:
                out.append(f"{where((key, index, 'trust_remote_code'))}: {key}[{index}].trust_remote_code: true runs "
                           f"the loading script of dataset {ds.path} on every node; only use it for code you trust")
    return out


def parse_override_args(args: list[str]) -> dict[str, Any]:
    """``['--learning_rate', '1e-4', '--sample_packing', '--launch.gpus=H100:8']`` -> typed-later values.

    Values are read as YAML scalars/flow collections; strings such as ``1e-4`` are left for pydantic, whose lax
    mode coerces them to the field's type. A flag with no value means ``true``.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise UserError(f"unexpected argument {arg!r}: overrides look like --key value or --key=value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_") if key.replace("-", "_") in Config.model_fields else key
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        out[key] = _parse_scalar(value)
        i += 1
    return out


def _parse_scalar(value: str) -> Any:
    try:
        return yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        return value


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> set[KeyPath]:
    paths: set[KeyPath] = set()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        target = data
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        target[parts[-1]] = value
        paths.add(tuple(parts))
    return paths


def _check_names(
    data: Any,
    model: type[BaseModel],
    prefix: KeyPath,
    where: Any,
    problems: list[str],
    tally: _Tally,
    *,
    strict: bool = False,
    overrides: frozenset[KeyPath] | set[KeyPath] = frozenset(),
) -> None:
    if not isinstance(data, dict):
        return
    known = _field_names(model)
    axolotl_known = _axolotl_names(model)
    for key in list(data):
        path = (*prefix, key)
        if not isinstance(key, str):
            problems.append(f"{where(path)}: key {key!r} must be a string")
            continue
        if key in known:
            tally.used += 1
            annotation = model.model_fields[_canonical(model, key)].annotation
            _check_nested(data[key], annotation, path, where, problems, tally, strict=strict, overrides=overrides)
            continue
        if key in axolotl_known:
            value = data.pop(key)
            if value not in (None, False, "", [], {}):
                tally.unsupported += 1
                tally.warnings.append(f"{where(path)}: {_dotted(path)} {_why_ignored(model, key)}; ignored")
            continue
        suggestion = difflib.get_close_matches(key, sorted(known | axolotl_known), n=1, cutoff=0.6)
        hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
        ours = path[0] == "launch" or path[:1] in overrides or path in overrides
        if strict or ours:
            problems.append(f"{where(path)}: unknown key {_dotted(path)!r}{hint}")
        else:
            data.pop(key)
            tally.warnings.append(f"{where(path)}: unknown key {_dotted(path)!r}{hint}; ignored, as Axolotl ignores "
                                  f"it ({STRICT_KEYS_ENV}=1 makes unknown keys errors)")


def _why_ignored(model: type[BaseModel], key: str) -> str:
    """The one-line reason an Axolotl key has no effect here."""
    reasons = unsupported.DATASET if model is DatasetConfig else unsupported.TOP_LEVEL if model is Config else {}
    if key in reasons:
        return f"is not supported by mudpuppy: {reasons[key]}"
    if model is Config and key in axolotl_keys.PLUGIN_KEYS:
        return f"belongs to Axolotl's {axolotl_keys.PLUGIN_KEYS[key]} plugin, which mudpuppy does not run"
    if key in axolotl_keys.IGNORED_BY_AXOLOTL:
        return "is not read by Axolotl either"
    return "is an Axolotl option mudpuppy does not implement yet"


def _check_nested(
    value: Any, annotation: Any, path: KeyPath, where: Any, problems: list[str], tally: _Tally, **how: Any
) -> None:
    if isinstance(value, dict):
        model = _model_in(annotation, list_item=False)
        if model is not None:
            _check_names(value, model, path, where, problems, tally, **how)
    elif isinstance(value, list):
        model = _model_in(annotation, list_item=True)
        if model is not None:
            for index, item in enumerate(value):
                _check_names(item, model, (*path, index), where, problems, tally, **how)


def _model_in(annotation: Any, *, list_item: bool) -> type[BaseModel] | None:
    """The section model a dict (or a list's items) must follow, found inside Optional/Union/list[...]."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg, list_item=list_item)
            if found is not None:
                return found
        return None
    if list_item:
        if origin is list:
            (item,) = typing.get_args(annotation) or (None,)
            return _model_in(item, list_item=False)
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    names.update(f.alias for f in model.model_fields.values() if f.alias)
    return names


def _canonical(model: type[BaseModel], key: str) -> str:
    if key in model.model_fields:
        return key
    for name, info in model.model_fields.items():
        if info.alias == key:
            return name
    return key


def _axolotl_names(model: type[BaseModel]) -> frozenset[str]:
    """Keys Axolotl accepts in the section ``model`` stands for (minus the ones the schema implements)."""
    known = {
        Config: axolotl_keys.TOP_LEVEL,
        DatasetConfig: axolotl_keys.DATASET,
        UserDefinedFormat: axolotl_keys.DATASET_TYPE_MAPPING,
        TRLSection: axolotl_keys.NESTED.get("trl", frozenset()),
        SpecialTokens: axolotl_keys.NESTED.get("special_tokens", frozenset()),
        PeftConfig: axolotl_keys.NESTED.get("peft", frozenset()),
        LoftQConfig: axolotl_keys.NESTED.get("loftq_config", frozenset()),
    }.get(model, frozenset())
    return known - _field_names(model)


def _describe(err: Any, where: Any) -> str:
    path: KeyPath = tuple(p for p in err["loc"] if not (isinstance(p, str) and _is_union_tag(p)))
    message = err["msg"]
    if err["type"] == "missing":
        message = "required key is missing"
    elif "input" in err and err["type"] not in ("missing",):
        shown = repr(err["input"])
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message = f"{message} (got {shown})"
    return f"{where(path)}: {_dotted(path)}: {message}"


def _is_union_tag(part: str) -> bool:
    """pydantic inserts the tried union member ('str', 'UserDefinedFormat', 'list[str]') into error paths."""
    return part[:1].isupper() or part in {"str", "int", "float", "bool"} or "[" in part or part.startswith("literal")


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<config>"
