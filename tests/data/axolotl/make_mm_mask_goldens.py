"""Axolotl 0.19's multimodal role-mask scanner on synthetic token ids -> tests/data/golden/mm_masks/cases.json.

    AXOLOTL_DO_NOT_TRACK=1 /work/axolotl-venv/bin/python tests/data/axolotl/make_mm_mask_goldens.py

Each case is a list of role boundaries (start/end id sequences, include_start/include_end), the roles that
train, a ``train_on_eos`` mode and rows of ids; the golden is Axolotl's keep mask
(``axolotl.processing_strategies._compute_role_keep_mask``). The boundary sets mirror the families' shapes:
ChatML-like markers (longest start wins over a shorter shared prefix), Pixtral / Mistral v7 Tekken's
``[INST] ... [/INST] answer </s>`` where the user turn hands ``[/INST]`` to the assistant (include_end=False),
a system block, an unterminated final turn, and markers that never occur. Used by
tests/unit/data/test_mm_masks.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from axolotl.processing_strategies import RoleBoundary, _compute_role_keep_mask

OUT = Path(__file__).resolve().parents[1] / "golden" / "mm_masks" / "cases.json"
CHATML = [  # <|im_start|>=1, role words 2/3/4, "\n"=5, <|im_end|>=6; <|im_start|> alone = a shorter rival
    {"role": "system", "start": [1, 2, 5], "end": [6]},
    {"role": "user", "start": [1, 3, 5], "end": [6]},
    {"role": "assistant", "start": [1, 4, 5], "end": [6]},
    {"role": "other", "start": [1], "end": [6]},
]
INST = [  # [INST]=10, [/INST]=11, eos=2, [SYSTEM_PROMPT]=12, [/SYSTEM_PROMPT]=13
    {"role": "system", "start": [12], "end": [13]},
    {"role": "user", "start": [10], "end": [11], "include_end": False},
    {"role": "assistant", "start": [11], "end": [2]},
]
HEADER = [  # two-token start with include_start, end of two tokens
    {"role": "user", "start": [20, 21], "end": [22, 23]},
    {"role": "assistant", "start": [20, 24], "end": [22, 23], "include_start": True},
]


def rows_for(boundaries: list[dict], rng: random.Random) -> list[list[int]]:
    pieces = [b["start"] for b in boundaries] + [b["end"] for b in boundaries]
    rows = []
    for _ in range(6):
        row: list[int] = []
        for _ in range(rng.randint(2, 5)):
            row += rng.choice(pieces) + [rng.randint(30, 40) for _ in range(rng.randint(0, 3))]
        rows.append(row)
    width = max(len(r) for r in rows)
    return [r + [0] * (width - len(r)) for r in rows]  # pad id 0, as a right-padded batch


def main() -> None:
    rng = random.Random(19)
    cases = []
    for name, boundaries in (("chatml", CHATML), ("inst", INST), ("header", HEADER)):
        handcrafted = {
            "chatml": [[1, 2, 5, 31, 6, 1, 3, 5, 32, 33, 6, 1, 4, 5, 34, 35, 6, 1, 3, 5, 36, 6, 1, 4, 5, 37]],
            "inst": [[12, 31, 13, 10, 32, 11, 33, 34, 2, 10, 35, 11, 36, 2, 10, 37, 11]],
            "header": [[20, 21, 31, 22, 23, 20, 24, 32, 33, 22, 23, 20, 24, 34]],
        }[name]
        width = max(len(r) for r in handcrafted)
        rows = [r + [0] * (width - len(r)) for r in handcrafted]
        for ids in (rows, rows_for(boundaries, rng)):
            for roles in (["assistant"], ["assistant", "user"], []):
                for eos in ("turn", "all", "none", "last"):
                    spec = [RoleBoundary(role=b["role"], start_tokens=b["start"], end_tokens=b["end"],
                                         include_start=b.get("include_start", False),
                                         include_end=b.get("include_end", True)) for b in boundaries]
                    keep = _compute_role_keep_mask(torch.tensor(ids), spec, set(roles), eos)
                    cases.append({"boundaries": boundaries, "roles_to_train": roles, "train_on_eos": eos,
                                  "ids": ids, "keep": keep.int().tolist()})
    OUT.write_text(json.dumps({"made_with": "axolotl 0.19.0 processing_strategies._compute_role_keep_mask",
                               "cases": cases}) + "\n")
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
