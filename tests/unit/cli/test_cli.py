"""The CLI: help is light, user errors are one line with exit 2, config/fetch commands do what they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mudpuppy.launcher.cli import COMMANDS, cli, main

pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).resolve().parents[3] / "templates" / "examples" / "tiny-alpaca.yml"


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_help_lists_every_registered_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())  # click wraps long help lines
    for name, (_, _, short_help) in COMMANDS.items():
        assert f"{name} {short_help}" in flat


def test_every_registered_command_resolves_and_has_help() -> None:
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_help_imports_no_heavy_modules() -> None:
    probe = (
        "import sys; from mudpuppy.launcher.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'pydantic', 'datasets', 'peft', 'rich', 'fabric', 'ray',"
        " 'sky', 'modal') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("HEAVY="), out


def test_user_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(
        "base_model: m\nlearning_rate: 1e-4\nlora_alpah: 3\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n"
    )
    code, out, err = run_main(["config", "validate", "--strict-keys", str(cfg)], capsys)
    assert code == 2
    assert out.strip() == f"{cfg}: 1 problem(s); 5 keys used, 0 unsupported"
    assert err.strip() == f"error: {cfg}:3: unknown key 'lora_alpah' (did you mean 'lora_alpha'?)"
    assert "Traceback" not in err


def test_a_misspelled_key_warns_and_validates_like_axolotl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(
        "base_model: m\nlearning_rate: 1e-4\nlora_alpah: 3\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n"
    )
    code, out, err = run_main(["config", "validate", str(cfg)], capsys)
    assert code == 0
    assert out.strip().startswith(f"{cfg}: ok (")
    assert err.strip().startswith(f"warning: {cfg}:3: unknown key 'lora_alpah' (did you mean 'lora_alpha'?); ignored")


def test_several_problems_are_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("base_model: m\nlearning_rate: 1e-4\nlora_alpah: 3\nmicro_batch_sise: 2\n")
    code, _, err = run_main(["config", "validate", "--strict-keys", str(cfg)], capsys)
    assert code == 2
    assert [line.split(":")[2] for line in err.strip().splitlines()] == ["3", "4"]
    assert all(line.startswith(f"error: {cfg}:") for line in err.strip().splitlines())


def test_missing_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["config", "show", "/nonexistent/cfg.yml"], capsys)
    assert code == 2
    assert err.strip() == (
        "error: config file /nonexistent/cfg.yml does not exist (check the path; it is relative to here)"
    )


def test_config_show_resolves_defaults_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["config", "show", str(EXAMPLE), "--learning_rate", "5e-5", "--launch.nodes", "2"], capsys)
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["learning_rate"] == pytest.approx(5e-5)
    assert shown["launch"]["nodes"] == 2
    assert shown["sequence_len"] == 256
    assert shown["optimizer"] == "adamw_torch"
    assert shown["lr_scheduler"] == "cosine"
    assert "eval_sample_packing" not in shown  # null keys are left out unless --all


def test_config_validate_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["config", "validate", str(EXAMPLE)], capsys)
    assert code == 0
    assert out.strip().startswith(f"{EXAMPLE}: ok (sft, lora, 1 dataset(s), backend local); ")
    assert out.strip().endswith(" keys used, 0 unsupported")


def test_config_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["config", "schema"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["title"] == "mudpuppy config"
    assert "base_model" in doc["required"] and "learning_rate" in doc["required"]
    assert doc["properties"]["lora_dropout"]["default"] == 0.0


def test_fetch_examples_copies_and_keeps_existing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["fetch", "examples", "--dest", str(tmp_path)], capsys)
    assert code == 0
    assert (tmp_path / "examples" / "tiny-alpaca.yml").is_file()
    assert (tmp_path / "examples" / "tiny-llama" / "tokenizer.json").is_file()
    (tmp_path / "examples" / "tiny-alpaca.yml").write_text("mine")
    code, out, _ = run_main(["fetch", "examples", "--dest", str(tmp_path)], capsys)
    assert "already there" in out
    assert (tmp_path / "examples" / "tiny-alpaca.yml").read_text() == "mine"
    run_main(["fetch", "examples", "--dest", str(tmp_path), "--force"], capsys)
    assert (tmp_path / "examples" / "tiny-alpaca.yml").read_text() == EXAMPLE.read_text()


def test_fetched_example_validates_from_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run_main(["fetch", "examples", "--dest", str(tmp_path)], capsys)
    monkeypatch.chdir(tmp_path)
    code, _, _ = run_main(["config", "validate", "examples/tiny-alpaca.yml"], capsys)
    assert code == 0
    cfg = yaml.safe_load((tmp_path / "examples" / "tiny-alpaca.yml").read_text())
    assert Path(cfg["base_model"]).is_dir()
    assert Path(cfg["datasets"][0]["path"]).is_file()


def test_validate_prints_warnings_and_summary_even_when_it_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("base_model: m\nlearning_rate: 1e-4\ndp_shard_size: 2\nlora_alpah: 3\n"
                   "datasets:\n  - path: a.jsonl\n    type: alpaca\n")
    code, out, err = run_main(["config", "validate", "--strict-keys", str(cfg)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"warning: {cfg}:3: dp_shard_size is not supported by mudpuppy: FSDP shards")
    assert lines[1] == f"error: {cfg}:4: unknown key 'lora_alpah' (did you mean 'lora_alpha'?)"
    assert out.strip() == f"{cfg}: 1 problem(s); 5 keys used, 1 unsupported"
