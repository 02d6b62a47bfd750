"""Our preference rows must equal Axolotl's for the same config, data and tokenizer (goldens made by
tests/data/rl/make_golden.py with the Axolotl venv): every DPO/KTO/ORPO type, merging, splitting, length rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "data" / "rl"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))
pytestmark = pytest.mark.timeout(120)  # per case; most take well under a second
KEYS = ("prompt", "chosen", "rejected", "completion", "label", "chosen_ids", "rejected_ids", "input_ids",
        "attention_mask", "labels", "prompt_length")


@pytest.fixture(scope="module", autouse=True)
def _at_root():  # noqa: ANN202
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # golden configs use repo-relative paths
    yield
    mp.undo()


def _rows(dataset: object) -> list[dict]:
    if dataset is None:
        return []
    return [{k: r[k] for k in KEYS if k in r} for r in dataset]  # type: ignore[attr-defined]


def test_cases_exist() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES)
def test_rows_equal_axolotl(case: str) -> None:
    from mudpuppy.runtime.data import prepare

    golden = json.loads((GOLDEN / f"{case}.json").read_text())
    config = {**golden["config"], "output_dir": "unused"}
    config.pop("remove_unused_columns", None)
    cfg = load_config_text(yaml.safe_dump(config), name=f"{case}.yml").config
    result = prepare(cfg)
    for split, ours in (("train", result.train), ("eval", result.eval)):
        got, expected = _rows(ours), golden[split]
        assert len(got) == len(expected), f"{case} {split}: {len(got)} rows, Axolotl {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert g == e, f"{case} {split} row {i}:\n ours {g}\n axo  {e}"
