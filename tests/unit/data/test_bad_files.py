"""Broken dataset files end as one line naming the file (and row), never an IndexError, crash or traceback.

The leading ``null`` row is run in a child process: pyarrow's JSON reader kills the process with SIGSEGV on it,
so a regression must show up as a failed test, not as a dead test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import prepare

pytestmark = pytest.mark.timeout(120)

ROW = {"instruction": "Say 1.", "input": "", "output": "1 said."}


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_jsonl_is_one_line(tmp_path: Path, make_cfg, text: str) -> None:  # noqa: ANN001
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(UserError, match=r"empty\.jsonl has no rows \(the file is empty or only whitespace\)"):
        prepare(make_cfg(datasets=[{"path": str(path), "type": "alpaca"}]))


@pytest.mark.parametrize(
    "name,body,expected",
    [
        ("ragged.csv", "instruction,output\n1\n1,2,3\n", r"ragged\.csv': Error tokenizing data"),
        ("empty.csv", "", r"empty\.csv': No columns to parse"),
        ("junk.parquet", "not a parquet file at all", r"junk\.parquet': Parquet magic bytes not found"),
        ("num.jsonl", "5\n", r"num\.jsonl: line 1: malformed JSON \(expected an object, got int\)"),
        ("later.jsonl", json.dumps(ROW) + "\n[1, 2]\n", r"later\.jsonl: line 2: malformed JSON"),
    ],
)
def test_broken_files_name_the_file(tmp_path: Path, make_cfg, name: str, body: str, expected: str) -> None:  # noqa: ANN001
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(UserError, match=expected):
        prepare(make_cfg(datasets=[{"path": str(path), "type": "alpaca"}]))


def test_only_malformed_rows_with_skip_invalid_is_one_line(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    path = tmp_path / "bad.jsonl"
    path.write_text("null\n{oops\n")
    cfg = make_cfg(datasets=[{"path": str(path), "type": "alpaca"}], skip_invalid_rows=True)
    with pytest.raises(UserError, match=r"bad\.jsonl: no valid rows \(2 malformed lines skipped\)"):
        prepare(cfg)
    path.write_text("null\n" + json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    result = prepare(cfg)
    assert len(result.train) == 2 and result.stats.skipped_invalid == 1


@pytest.mark.parametrize("head,why", [("null", "expected an object, got NoneType"),
                                      ('null"{"a": 1} 1', "Extra data")])  # the second one found by the fuzz test
def test_leading_null_row_does_not_crash_the_process(tmp_path: Path, head: str, why: str) -> None:
    path = tmp_path / "null.jsonl"
    path.write_text(head + "\n" + json.dumps(ROW) + "\n")
    probe = (
        "import sys\n"
        "from types import SimpleNamespace\n"
        "from mudpuppy.launcher.errors import UserError\n"
        "from mudpuppy.runtime.data.loading import load_raw\n"
        "ds = SimpleNamespace(path=sys.argv[1], ds_type=None, split=None, name=None, data_files=None,\n"
        "                     revision=None, trust_remote_code=False)\n"
        "try:\n"
        "    load_raw(ds, 'train')\n"
        "except UserError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert f"null.jsonl: line 1: malformed JSON ({why})" in proc.stdout
