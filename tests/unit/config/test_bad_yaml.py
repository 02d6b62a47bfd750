"""Hostile or broken YAML: alias bombs, runaway nesting, recursive anchors, duplicate keys, odd config paths.

Each must end as one ``UserError`` line naming the file and line, quickly and in little memory; the bomb is also
run through the real CLI in a child process with an address-space limit, as a user would meet it.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from mudpuppy.launcher.config import load_config, load_config_text
from mudpuppy.launcher.errors import UserError
from tests.unit.config.minimal import BASE

pytestmark = pytest.mark.timeout(60)


def bomb(levels: int) -> str:
    """The classic "billion laughs": each level holds ten aliases of the one before (10**levels leaves)."""
    text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in range(1, levels + 1):
        text += f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]\n"
    return text


def error_of(text: str) -> str:
    with pytest.raises(UserError) as info:
        load_config_text(text, "cfg.yml")
    return info.value.one_line()


def test_alias_bomb_is_refused_in_bounded_time_and_memory() -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        message = error_of(BASE + bomb(9))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.startswith("cfg.yml:"), message
    assert "YAML aliases expand to more than 200,000 values" in message
    assert time.monotonic() - started < 5
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_alias_bomb_through_the_cli_exits_2_under_a_memory_limit(tmp_path: Path) -> None:
    cfg = tmp_path / "bomb.yml"
    cfg.write_text(BASE + bomb(9))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    proc = subprocess.run([sys.executable, "-m", "mudpuppy", "config", "validate", str(cfg)], capture_output=True,
                          text=True, timeout=60, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and f"{cfg}:" in proc.stderr


def test_modest_anchors_and_merge_keys_still_work() -> None:
    text = BASE + "lora_target_modules: &mods [q_proj, v_proj]\nlora_modules_to_save: *mods\n"
    assert load_config_text(text).config.lora_modules_to_save == ["q_proj", "v_proj"]
    # a merge key followed by an explicit key of the same name is YAML's override rule, not a duplicate
    source = load_config_text(BASE + "launch:\n  env:\n    <<: {A: '1', B: '2'}\n    A: '3'\n").source
    assert source.data["launch"]["env"] == {"A": "3", "B": "2"}


@pytest.mark.parametrize("opener,closer", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_one_line_not_recursion_error(opener: str, closer: str) -> None:
    message = error_of(BASE + "x: " + opener * 50_000 + "1" + closer * 50_000 + "\n")
    assert message.startswith("cfg.yml:6: YAML nested deeper than 64 levels"), message


def test_aliases_that_nest_past_the_limit_are_refused() -> None:
    text = BASE + "n0: &n0 [x]\n" + "".join(f"n{i}: &n{i} [*n{i - 1}]\n" for i in range(1, 2000))
    assert "nests deeper than 64 levels" in error_of(text)


def test_recursive_alias_is_refused() -> None:
    message = error_of(BASE + "lora_target_modules: &r [q_proj, *r]\n")
    assert message.startswith("cfg.yml:6: YAML alias refers to a value that contains it"), message


def test_duplicate_keys_name_both_lines() -> None:
    assert error_of(BASE + "learning_rate: 1e-4\n") == (
        "cfg.yml:6: key 'learning_rate' appears twice in one mapping (lines 2 and 6) (keep one of them)"
    )
    nested = BASE.replace("type: alpaca", "type: alpaca\n    type: chat_template")
    assert "cfg.yml:6: key 'type' appears twice in one mapping (lines 5 and 6)" in error_of(nested)
    assert "appears twice in one mapping (lines 6 and 6)" in error_of(BASE + "launch: {env: {A: '1', A: '2'}}\n")
    # the same key in two different mappings is fine
    assert load_config_text(BASE + "test_datasets:\n  - path: e.jsonl\n    type: alpaca\n").config.test_datasets


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2024-13-45", "cannot read '2024-13-45' as timestamp (month must be in 1..12)"),
        ("!!timestamp", "cannot read '' as timestamp"),  # found by the fuzz test: PyYAML's AttributeError
        ("!!int x", "cannot read 'x' as int"),
        ("!!float x", "cannot read 'x' as float"),
        ("!!bool maybe", "cannot read 'maybe' as bool"),
        ("!!python/object:os.system x", "could not determine a constructor"),
    ],
)
def test_values_yaml_cannot_build_are_one_line(value: str, expected: str) -> None:
    message = error_of(BASE + f"wandb_name: {value}\n")
    assert message.startswith("cfg.yml:6: invalid YAML: ") and expected in message, message


def test_control_characters_are_one_line() -> None:  # found by the fuzz test: the reader raised outside the try
    assert error_of("\x00").startswith("cfg.yml: invalid YAML: unacceptable character #x0000")


def test_config_path_that_never_ends_is_bounded() -> None:
    started = time.monotonic()
    with pytest.raises(UserError, match="larger than 4 MiB"):
        load_config("/dev/zero")
    assert time.monotonic() - started < 5
