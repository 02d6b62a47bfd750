"""The suite's own rules, checked so a new test file cannot forget them: every test file has a timeout, no test
skips by grepping source text, and in a required run (CI=true / MUDPUPPY_REQUIRE_EXTRAS=1) a skip is a failure."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parents[1]


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "fixtures" not in p.parts)


def _is_timeout_mark(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "timeout"
        and isinstance(n.func.value, ast.Attribute) and n.func.value.attr == "mark"
        for n in ast.walk(node)
    )


def _missing_timeouts(path: Path) -> list[str]:
    """Test functions in ``path`` not covered by a module-level ``pytestmark`` timeout or their own mark."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets) and _is_timeout_mark(node):
            return []
    return [
        node.name for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
        and not any(_is_timeout_mark(d) for d in node.decorator_list)
    ]


def test_every_test_file_has_a_timeout() -> None:
    files = _test_files()
    assert len(files) > 20, files  # the walk found the suite
    bad = {str(p.relative_to(TESTS)): m for p in files if (m := _missing_timeouts(p))}
    assert not bad, f"add `pytestmark = pytest.mark.timeout(N)` to: {bad}"


def test_the_timeout_check_catches_a_file_without_one(tmp_path: Path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text("import pytest\npytestmark = pytest.mark.slow\n\ndef test_a():\n    pass\n")
    assert _missing_timeouts(path) == ["test_a"]
    path.write_text("import pytest\n\n@pytest.mark.timeout(5)\ndef test_a():\n    pass\n")
    assert _missing_timeouts(path) == []


def test_no_test_skips_by_reading_source_text() -> None:
    bad = []
    for path in _test_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "skipif", "skip", "xfail",
            ):
                names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "") for n in ast.walk(node)}
                if names & {"getsource", "read_text", "read_bytes"}:
                    bad.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert not bad, f"skip conditions that grep source text: {bad}"


SAMPLE = """
import pytest

pytestmark = pytest.mark.timeout(30)

def test_service():
    pytest.skip("port 6817 taken")

def test_extra():
    pytest.importorskip("no_such_module_mudpuppy")

@pytest.mark.gpu
def test_gpu():
    pytest.skip("no CUDA device")
"""


def _run_sample(tmp_path: Path, env: dict[str, str]) -> str:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "MUDPUPPY_REQUIRE_EXTRAS")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "mudpuppy.tests.conftest",
         "-o", "markers=gpu: x", str(tmp_path / "test_sample.py")],
        capture_output=True, text=True, timeout=100, cwd=tmp_path, env={**clean, **env}, check=False,
    )
    return proc.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {"MUDPUPPY_REQUIRE_EXTRAS": "1"}])
def test_a_required_run_fails_every_skip_but_gpu(tmp_path: Path, env: dict[str, str]) -> None:
    out = _run_sample(tmp_path, env)
    assert "FAILED test_sample.py::test_service" in out and "port 6817 taken" in out, out
    assert "FAILED test_sample.py::test_extra" in out, out
    assert "SKIPPED" in out and "no CUDA device" in out and "2 failed, 1 skipped" in out, out


def test_a_laptop_run_skips_with_the_reason(tmp_path: Path) -> None:
    out = _run_sample(tmp_path, {})
    assert "3 skipped" in out and "port 6817 taken" in out, out
