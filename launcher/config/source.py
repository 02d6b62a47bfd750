"""Reading a config document: local path or https URL, YAML with the line of every key kept.

Line numbers let every later error say ``cfg.yml:12`` next to the key, which is what makes a typo in a
300-line Axolotl config quick to find.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mudpuppy.launcher.errors import UserError

KeyPath = tuple[str | int, ...]
URL_DEADLINE_S: float = 30.0
MAX_CONFIG_BYTES = 4 * 2**20
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 200_000


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
            with path.open("rb") as handle:  # bounded: the path may be /dev/zero or a pipe as well as a file
                raw = handle.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise UserError(f"config {path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; pass the YAML file")
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read config {path}: {exc}") from None
    return parse_yaml(text, text_location)


def parse_yaml(text: str, name: str) -> ConfigSource:
    """Parse one YAML document, refusing what would make later steps explode rather than reading it.

    PyYAML keeps an alias as a pointer to the anchored node, so a "billion laughs" document parses small but
    expands to billions of values as soon as anything walks it (line collection, pydantic, ``config show``).
    The composed graph is therefore measured as if expanded, and refused past a bound, before any value is built;
    nesting is capped while composing, since PyYAML recurses once per level.
    """
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader rejects control characters here already
        node = loader.get_single_node()
        if node is None:
            raise UserError(f"{name} is empty; a config needs at least base_model, datasets and learning_rate")
        _check_shape(node, name)
        _check_duplicate_keys(node, name)
        data = loader.construct_document(node)
    except _TooDeep as exc:
        raise UserError(f"{name}:{exc.line}: YAML nested deeper than {MAX_DEPTH} levels",
                        hint="a config is a few levels deep; check for runaway brackets") from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise UserError(f"{name}:{line}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{name}: invalid YAML: {exc}") from None
    except _VALUE_ERRORS as exc:  # raised outside construct_object, e.g. while finishing a mapping
        raise UserError(f"{name}: invalid YAML value: {exc}", hint="quote it if it is meant as text") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        raise UserError(f"{name} is empty; a config needs at least base_model, datasets and learning_rate")
    if not isinstance(data, dict):
        raise UserError(f"{name}: the top level must be a mapping of keys (base_model: ..., datasets: ...)")
    lines: dict[KeyPath, int] = {}
    _collect_lines(node, (), lines)
    return ConfigSource(name=name, data=data, lines=lines)


_VALUE_ERRORS = (ValueError, OverflowError, AttributeError, KeyError, TypeError, IndexError)


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops composing past ``MAX_DEPTH`` levels instead of hitting Python's recursion limit."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's constructors raise bare ValueError/AttributeError/... on explicitly tagged nonsense
        (``!!timestamp x``, ``!!int y``); give them the node's line like any other YAML error."""
        try:
            return super().construct_object(node, deep)
        except _VALUE_ERRORS as exc:
            shown = repr(node.value)[:40] if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {node.tag.rsplit(':', 1)[-1]} ({exc})", node.start_mark
            ) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_shape(root: yaml.Node, name: str) -> None:
    """Expanded size and depth of the node graph, memoised per node (so linear in the text), without recursion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_EXPANDED_NODES:
                line = node.start_mark.line + 1
                raise UserError(
                    f"{name}:{line}: YAML aliases expand to more than {MAX_EXPANDED_NODES:,} values",
                    hint="an alias bomb or a runaway anchor; write the values out or use fewer nested aliases",
                )
            if depth[key] > MAX_DEPTH:
                raise UserError(f"{name}:{node.start_mark.line + 1}: YAML (with aliases expanded) nests deeper than "
                                f"{MAX_DEPTH} levels", hint="check the anchors (&name) and aliases (*name) used here")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise UserError(f"{name}:{node.start_mark.line + 1}: YAML alias refers to a value that contains it",
                            hint="a recursive anchor (&a [*a]) has no finite value; remove the alias")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node) if id(kid) not in size)


def _check_duplicate_keys(root: yaml.Node, name: str) -> None:
    """A key written twice in one mapping is an error: YAML loaders silently keep the last one."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key_node.start_mark.line + 1
                ident = (key_node.tag, key_node.value)
                if ident in first:
                    raise UserError(f"{name}:{line}: key {key_node.value!r} appears twice in one mapping "
                                    f"(lines {first[ident]} and {line})", hint="keep one of them")
                first[ident] = line
        stack.extend(_children(node))


def _collect_lines(node: yaml.Node | None, prefix: KeyPath, out: dict[KeyPath, int]) -> None:
    """Bounded by the checks above: at most MAX_DEPTH deep and MAX_EXPANDED_NODES in all."""
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


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to https: a hop to plain http would let anyone on the path rewrite the config."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise UserError(f"config URL {req.full_url} redirects to {newurl}, which is not https; refused",
                            hint="use the final https address, or download the file and pass its path")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_url(url: str) -> str:
    """The body of an https config URL, within ``URL_DEADLINE_S`` in total and at most ``MAX_CONFIG_BYTES``.

    A socket timeout only bounds each read, so a server trickling one byte a second would hold the launcher
    forever; the fetch runs in a daemon thread and the caller waits for it until the deadline, which also bounds
    name resolution (which no socket timeout covers).
    """
    if urllib.parse.urlsplit(url).scheme != "https":
        raise UserError(f"config URL {url} is plain http; refused, since anyone on the network path could change "
                        "what runs", hint="serve it over https, or download it and pass the local path")
    outcome: dict[str, Any] = {}

    def fetch() -> None:
        try:
            opener = urllib.request.build_opener(_NoDowngrade)
            with opener.open(url, timeout=URL_DEADLINE_S) as response:
                body = response.read(MAX_CONFIG_BYTES + 1)
            if len(body) > MAX_CONFIG_BYTES:
                raise UserError(f"config {url} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; refused",
                                hint="a config is a few KiB; check the URL")
            outcome["body"] = body
        except UserError as exc:
            outcome["error"] = exc
        except urllib.error.HTTPError as exc:
            outcome["error"] = UserError(f"cannot fetch config {url}: HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome["error"] = UserError(f"cannot fetch config {url}: {reason}", hint="check the URL and your network")

    worker = threading.Thread(target=fetch, name="mudpuppy-config-fetch", daemon=True)
    worker.start()
    worker.join(URL_DEADLINE_S)
    if worker.is_alive():
        raise UserError(f"cannot fetch config {url}: no complete answer within {URL_DEADLINE_S:g} s",
                        hint="check the URL and your network")
    if "error" in outcome:
        raise outcome["error"]
    try:
        return bytes(outcome["body"]).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config {url} is not UTF-8 text") from None
