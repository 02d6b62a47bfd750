"""Reading a config document: local path or https URL, YAML with the line of every key kept.

Line numbers let every later error say ``cfg.yml:12`` next to the key, which is what makes a typo in a
300-line Axolotl config quick to find.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mudpuppy.launcher.errors import UserError

KeyPath = tuple[str | int, ...]
_URL_TIMEOUT_S = 30


@dataclass
class ConfigSource:
    """The parsed document plus where it came from and the line of each key path."""

    name: str
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def where(self, path: KeyPath) -> str:
        """``file:line`` for the deepest prefix of ``path`` that has a line, else just the file."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return f"{self.name}:{line}"
        return self.name


def read_source(location: str | Path) -> ConfigSource:
    text_location = str(location)
    if text_location.startswith(("https://", "http://")):
        text = _fetch_url(text_location)
    else:
        path = Path(text_location)
        if not path.exists():
            raise UserError(f"config file {path} does not exist", hint="check the path; it is relative to here")
        if path.is_dir():
            raise UserError(f"config path {path} is a directory; pass the YAML file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read config {path}: {exc}") from None
    return parse_yaml(text, text_location)


def parse_yaml(text: str, name: str) -> ConfigSource:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise UserError(f"{name}:{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{name}: invalid YAML: {exc}") from None
    if data is None:
        raise UserError(f"{name} is empty; a config needs at least base_model, datasets and learning_rate")
    if not isinstance(data, dict):
        raise UserError(f"{name}: the top level must be a mapping of keys (base_model: ..., datasets: ...)")
    lines: dict[KeyPath, int] = {}
    _collect_lines(node, (), lines)
    return ConfigSource(name=name, data=data, lines=lines)


def _collect_lines(node: yaml.Node | None, prefix: KeyPath, out: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            path = (*prefix, key_node.value)
            out[path] = key_node.start_mark.line + 1
            _collect_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, index)
            out[path] = item.start_mark.line + 1
            _collect_lines(item, path, out)


def _fetch_url(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as response:  # noqa: S310 (https config URLs)
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        raise UserError(f"cannot fetch config {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot fetch config {url}: {reason}", hint="check the URL and your network") from None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config {url} is not UTF-8 text") from None
