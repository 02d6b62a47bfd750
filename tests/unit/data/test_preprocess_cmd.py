"""`mudpuppy preprocess`: summary, cache message on the second run, --dump rows, --debug, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mudpuppy.launcher.cli import cli
from tests.unit.data.conftest import BASE, write_jsonl

pytestmark = pytest.mark.timeout(300)


def _config(tmp_path: Path, **extra: object) -> str:
    data = write_jsonl(tmp_path / "a.jsonl", [{"instruction": f"Say {i}.", "input": "", "output": f"{i}."}
                                              for i in range(8)])
    cfg = {**BASE, "datasets": [{"path": str(data), "type": "alpaca"}], "sample_packing": True,
           "dataset_prepared_path": str(tmp_path / "prep"), **extra}
    path = tmp_path / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_preprocess_summary_cache_and_dump(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    dump = tmp_path / "rows.jsonl"
    first = CliRunner().invoke(cli, ["preprocess", cfg, "--dump", str(dump), "--debug", "--debug-num-examples", "1"])
    assert first.exit_code == 0, first.output
    assert "packing efficiency" in first.output and "example 0" in first.output
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"input_ids", "attention_mask", "labels"}
    second = CliRunner().invoke(cli, ["preprocess", cfg])
    assert second.exit_code == 0 and "loaded prepared dataset from cache" in second.output


def test_preprocess_bad_row_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "x", "input": ""}])
    cfg = _config(tmp_path, datasets=[{"path": str(bad), "type": "alpaca"}])
    result = subprocess.run([sys.executable, "-m", "mudpuppy", "preprocess", cfg], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert "b.jsonl: row 0: field 'output'" in result.stderr
    assert "Traceback" not in result.stderr
