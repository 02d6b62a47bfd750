"""Our rows must equal the rows Axolotl produced for the same config, data and tokenizer (goldens made by
tests/data/golden/make_golden.py with the Axolotl venv), per strategy and per masking option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "data" / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))
pytestmark = pytest.mark.timeout(120)  # per case; most take well under a second
EXTRA = {"output_dir": "unused"}


@pytest.fixture(scope="module")
def prepare(monkeypatch_module: pytest.MonkeyPatch):  # noqa: ANN201
    from mudpuppy.runtime.data import prepare as run

    return run


@pytest.fixture(scope="module")
def monkeypatch_module():  # noqa: ANN201
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # golden configs use repo-relative paths
    mp.syspath_prepend(str(GOLDEN / "inputs"))  # the user_module cases' strategy package, as the oracle had it
    yield mp
    mp.undo()


def _rows(dataset: object, keys: tuple[str, ...]) -> list[dict]:
    if dataset is None:
        return []
    return [{k: list(r[k]) for k in keys} for r in dataset]  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", CASES)
def test_rows_equal_axolotl(case: str, prepare) -> None:  # noqa: ANN001
    golden = json.loads((GOLDEN / f"{case}.json").read_text())
    cfg = load_config_text(yaml.safe_dump({**golden["config"], **EXTRA}), name=f"{case}.yml").config
    result = prepare(cfg)
    for split, ours in (("train", result.train), ("eval", result.eval)):
        expected = golden[split]
        keys = tuple(expected[0]) if expected else ("input_ids",)
        got = _rows(ours, keys)
        assert len(got) == len(expected), f"{case} {split}: {len(got)} rows, Axolotl {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            for k in keys:
                assert g[k] == e[k], f"{case} {split} row {i} {k}:\n ours {g[k]}\n axo  {e[k]}"
