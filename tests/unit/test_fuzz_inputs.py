"""Fuzzing what users hand us: config text and bytes, mutations of the bundled example, dataset files.

The only allowed outcomes are success or ``UserError`` (one line, exit 2). Anything else - a traceback type, a
crash, a hang, a memory blow-up - fails. Hypothesis runs derandomized with a fixed number of examples so CI
stays fast and repeatable; each example has a deadline, and config examples a tracemalloc peak bound. The
dataset loaders run in a child process under an address-space limit (pyarrow allocates outside tracemalloc's
view, and a crash there must fail this test, not kill the test run).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mudpuppy.launcher.config import load_config, load_config_text
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TEXT = (REPO / "templates" / "examples" / "tiny-alpaca.yml").read_text()
EXAMPLE = yaml.safe_load(EXAMPLE_TEXT)
MEMORY_LIMIT = 64 * 2**20
BASE_SETTINGS = settings(derandomize=True, database=None, deadline=10_000, print_blob=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


SCALE = float(os.environ.get("MUDPUPPY_FUZZ_SCALE", "1"))  # e.g. 20 for a long local run; CI keeps 1


def fuzz(examples: int) -> settings:
    return settings(BASE_SETTINGS, max_examples=max(1, int(examples * SCALE)))

YAML_CHARS = st.sampled_from(list(":-[]{}&*!|>'\"#%@`,?~<= \n\n\n  \t.0123456789eE+abxyz_\\") +
                             ["base_model", "learning_rate", "datasets", "path", "type", "launch", "<<", "&a", "*a",
                              "!!python/object", "!!binary", "!!set", "!!timestamp", "2024-13-45", ".nan", ".inf",
                              "1e400", "0x1F", "0o17", "1_000", "\x00", "\ufeff", "\x85", "\u2028", "é"])
NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.one_of(st.integers(), st.text(max_size=4), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=4)), max_size=2),
    st.sampled_from(["1e400", ".nan", "-1", "", "~", "true", "2e-4", "../../etc/passwd", "https://x", "0", "2.0"]),
)


def outcome(load: Any) -> None:
    """Run ``load`` and allow only success or UserError, within the memory bound."""
    tracemalloc.start()
    try:
        try:
            loaded = load()
        except UserError as exc:
            assert exc.one_line() and "\n" not in exc.one_line()
            return
        finally:
            _, peak = tracemalloc.get_traced_memory()
        assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.0f} MiB"
        # what `config show` does with it must work too
        yaml.safe_dump(loaded.config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    finally:
        tracemalloc.stop()


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += paths_of(item, (*prefix, index))
    return out


EXAMPLE_PATHS = paths_of(EXAMPLE)


@fuzz(250)
@given(st.lists(YAML_CHARS, max_size=80).map("".join))
def test_random_yaml_text(text: str) -> None:
    outcome(lambda: load_config_text(text, "fuzz.yml"))


@fuzz(60)
@given(st.binary(max_size=300))
def test_random_config_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "cfg.yml"
    path.write_bytes(data)
    outcome(lambda: load_config(path))


@fuzz(80)
@given(st.lists(st.tuples(st.sampled_from(EXAMPLE_PATHS), st.sampled_from(["set", "delete", "unknown", "nest"]),
                          NASTY), min_size=1, max_size=4))
def test_mutated_example_config(edits: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    doc = copy.deepcopy(EXAMPLE)
    for path, op, value in edits:
        parent: Any = doc
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            last = path[-1]
            try:
                if op == "set":
                    parent[last] = value
                elif op == "delete":
                    del parent[last]
                elif op == "unknown" and isinstance(parent, dict):
                    parent[f"{last}x"] = value
                elif op == "nest":
                    parent[last] = {"inner": value}
            except (KeyError, IndexError, TypeError):
                pass
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    outcome(lambda: load_config_text(text, "fuzz.yml"))


@fuzz(50)
@given(st.integers(min_value=0, max_value=len(EXAMPLE_TEXT)), st.integers(min_value=0, max_value=40),
       st.lists(YAML_CHARS, max_size=8).map("".join))
def test_spliced_example_text(at: int, cut: int, insert: str) -> None:
    text = EXAMPLE_TEXT[:at] + insert + EXAMPLE_TEXT[at + cut:]
    outcome(lambda: load_config_text(text, "fuzz.yml"))


@fuzz(25)
@given(levels=st.integers(min_value=1, max_value=14), fan_out=st.integers(min_value=1, max_value=14),
       depth=st.integers(min_value=0, max_value=300), mapping=st.booleans())
def test_anchor_and_nesting_shapes(levels: int, fan_out: int, depth: int, mapping: bool) -> None:
    """Alias fan-out and nesting of random size, from harmless to a 14**14 bomb: bounded either way.

    Nesting stays below a few hundred levels here: PyYAML's scanner looks ahead up to 1024 characters of open
    brackets (about a second under tracemalloc); far deeper nesting is tested once in test_bad_yaml.py.
    """
    text = EXAMPLE_TEXT + "a0: &a0 [x]\n"
    for level in range(1, levels + 1):
        items = ", ".join([f"*a{level - 1}"] * fan_out)
        text += f"a{level}: &a{level} " + (f"{{{', '.join(f'k{i}: *a{level - 1}' for i in range(fan_out))}}}\n"
                                           if mapping else f"[{items}]\n")
    text += "n: " + "[" * depth + "]" * depth + "\n"
    outcome(lambda: load_config_text(text, "fuzz.yml"))


def test_dataset_loaders_in_a_limited_child(tmp_path: Path) -> None:
    """Random JSONL/JSON/CSV bytes through the real dataset loader: only rows or UserError, under 2 GiB."""
    progress = tmp_path / "current.bin"
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_datasets_driver.py")),
                           str(tmp_path / "files"), str(progress)], capture_output=True, text=True, timeout=200,
                          env=env)
    last = progress.read_bytes()[:300] if progress.exists() else b""
    assert proc.returncode == 0, f"exit {proc.returncode} on input {last!r}: {proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["examples"] >= min(40, 50 * SCALE), summary
    assert summary["loaded"] + summary["user_errors"] == summary["examples"], summary
