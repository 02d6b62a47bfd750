"""mudpuppy's multimodal role-mask scanner equals Axolotl 0.19's on every case of tests/data/golden/mm_masks/cases.json
(made by Axolotl's own ``_compute_role_keep_mask``: ChatML-like markers with a shorter rival start, Pixtral /
Mistral v7 Tekken's shared ``[/INST]``, two-token markers with ``include_start``, unterminated turns, random
marker soups; every ``train_on_eos`` mode and several ``roles_to_train``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mudpuppy.runtime.data.multimodal_labels import Boundary, LabelRule

pytestmark = pytest.mark.timeout(60)
GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden" / "mm_masks" / "cases.json"
CASES = json.loads(GOLDEN.read_text())["cases"]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_keep_mask_equals_axolotls(index: int) -> None:
    case = CASES[index]
    rule = LabelRule(
        boundaries=[Boundary(b["role"], tuple(b["start"]), tuple(b["end"]), b.get("include_start", False),
                             b.get("include_end", True)) for b in case["boundaries"]],
        roles_to_train=tuple(case["roles_to_train"]), train_on_eos=case["train_on_eos"])
    assert [[int(k) for k in rule.keep_row(row)] for row in case["ids"]] == case["keep"]


def test_the_goldens_exercise_what_they_claim() -> None:
    assert len(CASES) == 72
    assert any(any(b.get("include_end") is False for b in c["boundaries"]) for c in CASES)
    assert {c["train_on_eos"] for c in CASES} == {"turn", "all", "none", "last"}
    assert any(any(k) for c in CASES for k in c["keep"]) and any(not all(k) for c in CASES for k in c["keep"])
