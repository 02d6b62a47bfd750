"""Values that ``validate`` used to pass but training rejects later, or trains nonsense with.

Each is compared with what Axolotl's own pydantic models accept (src/axolotl/utils/schemas/): we refuse only what
no trainer can use (NaN, infinities, negative rates, booleans for counts, integers past 64 bits, seeds numpy
rejects), and keep Axolotl's meaningful coercions ("2e-4" as a float, 4.0 as an int, val_set_size > 1 as rows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.cli import main
from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import ConfigError
from tests.unit.config.minimal import BASE

pytestmark = pytest.mark.timeout(60)


def set_key(key: str, value: str) -> str:
    lines = [line for line in BASE.splitlines() if not line.startswith(f"{key}:")]
    return "\n".join(lines) + f"\n{key}: {value}\n"


def only_problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "cfg.yml")
    (line,) = info.value.lines()
    return line


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("learning_rate", ".nan", "learning_rate: Input should be a finite number (got nan)"),
        ("learning_rate", ".inf", "learning_rate: Input should be a finite number (got inf)"),
        ("learning_rate", "-1e-4", "learning_rate: Input should be greater than or equal to 0"),
        ("learning_rate", "true", "learning_rate: expected a number, not true/false"),
        ("output_dir", '""', "output_dir: must name a folder"),
        ("output_dir", '"   "', "output_dir: must name a folder"),
        ("seed", "12345678901234567890123", "seed: integer does not fit in 64 bits"),
        ("seed", "4294967296", "seed: Input should be less than or equal to 4294967295"),
        ("seed", "-1", "seed: Input should be greater than or equal to 0"),
        ("gradient_accumulation_steps", "true", "gradient_accumulation_steps: expected a number, not true/false"),
        ("gradient_accumulation_steps", "1000000000000000000000000000",
         "gradient_accumulation_steps: integer does not fit in 64 bits"),
        ("micro_batch_size", "false", "micro_batch_size: expected a number, not true/false"),
        ("num_epochs", "1e400", "num_epochs: Input should be a finite number"),
        ("num_epochs", ".nan", "num_epochs: Input should be a finite number"),
        ("val_set_size", "1.0", "val_set_size: 1.0 would hold out every row"),
        ("val_set_size", ".nan", "val_set_size: Input should be a finite number"),
        ("weight_decay", ".inf", "weight_decay: Input should be a finite number"),
        ("lora_r", "true", "lora_r: expected a number, not true/false"),
    ],
)
def test_nonsense_value_is_one_line_with_file_and_line(key: str, value: str, expected: str) -> None:
    line = only_problem(set_key(key, value))
    assert line.startswith("cfg.yml:"), line
    assert expected in line, line


def test_dataset_entries_get_the_same_number_checks() -> None:
    text = BASE + "dataset_processes: true\n"
    assert "dataset_processes: expected a number, not true/false" in only_problem(text)


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("learning_rate", "'2e-4'", 2e-4),  # Axolotl converts a string learning rate with float()
        ("learning_rate", "0", 0.0),  # Axolotl and HF accept a zero rate (a frozen run)
        ("gradient_accumulation_steps", "4.0", 4),  # pydantic lax mode, as in Axolotl
        ("seed", "0", 0),
        ("seed", "4294967295", 4294967295),
        ("val_set_size", "2.0", 2.0),  # Axolotl: > 1 is a row count
        ("val_set_size", "0.5", 0.5),
        ("bf16", "true", True),  # booleans where booleans are meant
        ("torch_compile", "true", True),
    ],
)
def test_meaningful_values_axolotl_accepts_still_load(key: str, value: str, expected: object) -> None:
    cfg = load_config_text(set_key(key, value)).config
    assert getattr(cfg, key) == expected


def test_trust_remote_code_warns_once_naming_what_runs() -> None:
    entry = "    type: alpaca\n    trust_remote_code: true"
    text = BASE.replace("    type: alpaca", entry) + "trust_remote_code: true\n"
    warnings = load_config_text(text, "cfg.yml").warnings
    model = [w for w in warnings if w.startswith("cfg.yml:7: trust_remote_code")]
    data = [w for w in warnings if w.startswith("cfg.yml:6: datasets[0].trust_remote_code")]
    assert len(model) == 1 and "examples/tiny-llama" in model[0], warnings
    assert len(data) == 1 and "loading script of dataset data.jsonl" in data[0], warnings
    assert not load_config_text(BASE).warnings


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_config_show_says_how_val_set_size_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(set_key("val_set_size", "2.0"))
    code, out, _ = run_main(["config", "show", str(cfg)], capsys)
    assert code == 0
    assert "val_set_size: 2.0  # > 1: a row count, as in Axolotl: 2 rows held out for evaluation" in out
    code, out, _ = run_main(["config", "show", str(cfg), "--val_set_size", "0.05"], capsys)
    assert "val_set_size: 0.05  # a fraction: 5.0% of the rows held out for evaluation" in out


def test_bad_value_through_the_cli_is_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(set_key("learning_rate", ".nan"))
    code, out, err = run_main(["config", "validate", str(cfg)], capsys)
    assert code == 2 and out.strip().splitlines() == [f"{cfg}: 1 problem(s); 5 keys used, 0 unsupported"]
    assert err.strip().splitlines() == [f"error: {cfg}:5: learning_rate: Input should be a finite number (got nan)"]
