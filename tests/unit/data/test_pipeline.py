"""Loading formats, bad-row errors, skip_invalid_rows, the prepared-dataset cache, pre-tokenized passthrough."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mudpuppy.launcher.errors import UserError
from mudpuppy.runtime.data import prepare
from tests.unit.data.conftest import write_jsonl

ALPACA = [{"instruction": f"Say {i}.", "input": "", "output": f"{i} said."} for i in range(12)]


def alpaca(tmp_path: Path, rows: list[dict] | None = None, name: str = "a.jsonl") -> str:
    return str(write_jsonl(tmp_path / name, rows or ALPACA))


def test_formats_give_the_same_rows(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    import datasets

    src = alpaca(tmp_path)
    plain = datasets.Dataset.from_list(ALPACA)
    plain.to_csv(str(tmp_path / "a.csv"))
    plain.to_parquet(str(tmp_path / "a.parquet"))
    plain.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "dir").mkdir()
    write_jsonl(tmp_path / "dir" / "part.jsonl", ALPACA)
    entries = [
        {"path": src}, {"path": str(tmp_path / "a.csv")}, {"path": str(tmp_path / "a.parquet")},
        {"path": str(tmp_path / "saved")}, {"path": str(tmp_path / "dir"), "data_files": ["part.jsonl"]},
    ]
    results = []
    for entry in entries:
        cfg = make_cfg(datasets=[{**entry, "type": "alpaca"}], shuffle_merged_datasets=False)
        results.append(prepare(cfg).train["input_ids"])
    assert all(r == results[0] for r in results) and len(results[0]) == 12


def test_text_file_completion(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    (tmp_path / "t.txt").write_text("first line of text\nsecond line here\n")
    cfg = make_cfg(datasets=[{"path": str(tmp_path / "t.txt"), "type": "completion"}])
    train = prepare(cfg).train
    assert len(train) == 2 and all(r == ids for r, ids in zip(train["labels"], train["input_ids"], strict=True))


def test_malformed_json_line_names_file_and_line(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ALPACA[0]) + "\n{not json\n" + json.dumps(ALPACA[1]) + "\n")
    cfg = make_cfg(datasets=[{"path": str(path), "type": "alpaca"}])
    with pytest.raises(UserError, match=r"bad\.jsonl: line 2: malformed JSON"):
        prepare(cfg)
    cfg = make_cfg(datasets=[{"path": str(path), "type": "alpaca"}], skip_invalid_rows=True)
    result = prepare(cfg)
    assert len(result.train) == 2 and result.stats.skipped_invalid == 1


def test_missing_field_names_file_row_and_field(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    rows = [*ALPACA[:3], {"instruction": "no output here", "input": ""}, *ALPACA[3:5]]
    src = alpaca(tmp_path, rows)
    cfg = make_cfg(datasets=[{"path": src, "type": "alpaca"}])
    with pytest.raises(UserError, match=r"a\.jsonl: row 3: field 'output'"):
        prepare(cfg)
    result = prepare(make_cfg(datasets=[{"path": src, "type": "alpaca"}], skip_invalid_rows=True))
    assert len(result.train) == 5 and result.stats.skipped_invalid == 1


def test_chat_errors_name_the_field(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad_args = {"messages": [{"role": "user", "content": "add"}, {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}
    src = str(write_jsonl(tmp_path / "c.jsonl", [good, bad_args]))
    template = ("{% for message in messages %}{{ message.role }}: {{ message.content }}"
                "{{ message.tool_calls }}\n{% endfor %}")
    cfg = make_cfg(datasets=[{"path": src, "type": "chat_template", "chat_template": "jinja",
                              "chat_template_jinja": template}])
    with pytest.raises(UserError, match=r"row 1: field 'messages\[1\]\.tool_calls\[0\]\.function\.arguments'"):
        prepare(cfg)


def test_unknown_type_and_missing_path(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    with pytest.raises(UserError, match="unknown (dataset )?type 'alpacca'"):
        prepare(make_cfg(datasets=[{"path": alpaca(tmp_path), "type": "alpacca"}]))
    with pytest.raises(UserError, match="does not exist"):
        prepare(make_cfg(datasets=[{"path": str(tmp_path / "nope.jsonl"), "type": "alpaca"}]))


def test_cache_second_run_loads_and_is_never_half_written(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    prepared = tmp_path / "prepared"
    cfg = make_cfg(datasets=[{"path": alpaca(tmp_path), "type": "alpaca"}], dataset_prepared_path=str(prepared))
    first = prepare(cfg)
    assert not first.stats.from_cache
    second = prepare(cfg)
    assert second.stats.from_cache and second.train["input_ids"] == first.train["input_ids"]
    assert [p.name for p in prepared.iterdir() if p.name.startswith(".")] == []
    changed = make_cfg(datasets=[{"path": alpaca(tmp_path), "type": "alpaca"}], dataset_prepared_path=str(prepared),
                       train_on_inputs=True)
    assert not prepare(changed).stats.from_cache
    write_jsonl(tmp_path / "a.jsonl", ALPACA[:6])  # same path, new bytes -> new fingerprint
    assert not prepare(cfg).stats.from_cache


def test_failed_save_leaves_no_cache(tmp_path: Path, make_cfg, monkeypatch) -> None:  # noqa: ANN001
    import datasets

    prepared = tmp_path / "prepared"
    cfg = make_cfg(datasets=[{"path": alpaca(tmp_path), "type": "alpaca"}], dataset_prepared_path=str(prepared))

    def boom(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", boom)
    with pytest.raises(OSError):
        prepare(cfg)
    assert list(prepared.iterdir()) == []


def test_pretokenized_passthrough_and_validation(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    rows = [{"input_ids": [1, 5, 6, 2], "attention_mask": [1, 1, 1, 1], "labels": [-100, 5, 6, 2]}] * 3
    src = str(write_jsonl(tmp_path / "tok.jsonl", rows))
    train = prepare(make_cfg(datasets=[{"path": src}])).train
    assert train["labels"] == [r["labels"] for r in rows]
    bad = str(write_jsonl(tmp_path / "badtok.jsonl", [{**rows[0], "labels": [1, 2]}]))
    with pytest.raises(UserError, match=r"badtok\.jsonl: row 0: .*lengths differ"):
        prepare(make_cfg(datasets=[{"path": bad}]))


def test_packing_reports_efficiency(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    cfg = make_cfg(datasets=[{"path": alpaca(tmp_path), "type": "alpaca"}], sample_packing=True, sequence_len=128)
    result = prepare(cfg)
    packed = result.train_packed
    assert sum(packed["length"]) == sum(len(x) for x in result.train["input_ids"])
    assert 0 < result.stats.packing_efficiency <= 1
    for pos, lens in zip(packed["position_ids"], packed["seq_lens"], strict=True):
        assert pos == [p for n in lens for p in range(n)]
