"""The architecture's import rules, checked on the source so a violation fails before anyone notices slowness.

- backends never import the runtime; the runtime never imports a backend.
- launcher/ and backends/ import no heavy library (torch, transformers, SDKs) at module level: only inside the
  function that needs it, so `mudpuppy --help` and `launch --dry-run` stay fast on a laptop without torch.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {
    "torch", "transformers", "peft", "trl", "datasets", "accelerate", "deepspeed", "tokenizers",
    "fabric", "ray", "sky", "modal", "s3fs", "gcsfs", "boto3", "numpy",
}


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imports(tree: ast.AST, *, module_level_only: bool) -> Iterator[tuple[int, str]]:
    nodes = tree.body if module_level_only and isinstance(tree, ast.Module) else ast.walk(tree)
    for node in _flatten_module_level(nodes) if module_level_only else nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _flatten_module_level(body: object) -> Iterator[ast.AST]:
    """Module-level statements, descending into if/try blocks but not into functions or classes' methods."""
    for node in body:  # type: ignore[attr-defined]
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            continue
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            yield from _flatten_module_level(node.body)
            yield from _flatten_module_level(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                yield from _flatten_module_level(handler.body)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@pytest.mark.parametrize(("folder", "forbidden"), [("backends", "mudpuppy.runtime"), ("runtime", "mudpuppy.backends")])
def test_backends_and_runtime_never_import_each_other(folder: str, forbidden: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in python_files(folder)
        for line, name in imports(ast.parse(path.read_text()), module_level_only=False)
        if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert bad == []


@pytest.mark.parametrize("folder", ["launcher", "backends"])
def test_laptop_side_has_no_heavy_module_level_imports(folder: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in python_files(folder)
        for line, name in imports(ast.parse(path.read_text()), module_level_only=True)
        if name.split(".")[0] in HEAVY or name.startswith("mudpuppy.runtime")
    ]
    assert bad == []
