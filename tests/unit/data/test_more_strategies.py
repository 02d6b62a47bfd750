"""Bad rows for the strategies added for Axolotl parity (context_qa, orcamini, metharme, pygmalion): a one-line
error naming file, row and field. Their happy paths are golden-tested in test_golden."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import prepare
from tests.unit.data.conftest import write_jsonl

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(("type_", "row", "field"), [
    ("context_qa", {"article": "a", "answer": "b"}, "question"),
    ("orcamini", {"system_prompt": "s", "question": "q"}, "response"),
    ("metharme", {"prompt": "p"}, "generation"),
    ("pygmalion", {"conversations": [{"role": "bot"}]}, "conversations[0]"),
    ("pygmalion", {"turns": []}, "conversations"),
])
def test_bad_row_names_file_row_and_field(tmp_path: Path, make_cfg, type_: str, row: dict,  # noqa: ANN001
                                          field: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    cfg = make_cfg(datasets=[{"path": str(path), "type": type_}], dataset_prepared_path=str(tmp_path / "c"))
    with pytest.raises(UserError, match=rf"d\.jsonl: row 0: field {field!r}".replace("[", r"\[").replace("]", r"\]")):
        prepare(cfg)
