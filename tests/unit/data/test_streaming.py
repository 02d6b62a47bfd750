"""Streamed pretraining rows against Axolotl's own (goldens from tests/data/golden/make_pretrain_golden.py, which
runs Axolotl 0.19's ``_prepare_streaming_dataset`` on the same local file and tiny tokenizer), plus the rules."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.config import load_config_text
from mudpuppy.launcher.errors import ConfigError

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "data" / "golden" / "streaming"
TOK = "templates/examples/tiny-llama"


def _config(golden: dict, **extra: object):
    raw = {**golden["config"], "base_model": TOK, "learning_rate": 1e-3, **extra}
    raw["pretraining_dataset"] = [{k: v for k, v in raw["pretraining_dataset"][0].items() if v is not None}]
    return load_config_text(yaml.safe_dump(raw), name="p.yml").config


@pytest.fixture(scope="module")
def tokenizer(monkeypatch_module):  # noqa: ANN001, ANN201
    from mudpuppy.runtime.tokenizer import load_tokenizer

    return load_tokenizer(_config(json.loads((GOLDEN / "pretrain_concat.json").read_text())))


@pytest.fixture(scope="module")
def monkeypatch_module():  # noqa: ANN201
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # golden configs use repo-relative paths
    yield mp
    mp.undo()


def _first(dataset: object, n: int) -> list[dict]:
    out = []
    for row in dataset:  # type: ignore[attr-defined]
        out.append({k: list(v) for k, v in row.items()})
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("case", ["pretrain_concat", "pretrain_plain", "pretrain_noshuffle"])
def test_unpacked_rows_equal_axolotl(case: str, tokenizer) -> None:  # noqa: ANN001
    from mudpuppy.runtime.data.streaming import StreamedPretraining

    golden = json.loads((GOLDEN / f"{case}.json").read_text())
    rows = _first(StreamedPretraining(_config(golden), tokenizer), len(golden["rows"]))
    assert rows == golden["rows"]


def test_packed_windows_are_axolotls(tokenizer) -> None:  # noqa: ANN001
    """Axolotl orders each chunk with torch's RandomSampler before packing, so bins differ; the windows do not."""
    from mudpuppy.runtime.data.streaming import StreamedPretraining

    golden = json.loads((GOLDEN / "pretrain_packed.json").read_text())
    cfg = _config(golden)
    ours = list(StreamedPretraining(cfg, tokenizer))
    windows: Counter[tuple[int, ...]] = Counter()
    for row in ours:
        assert len(row["input_ids"]) <= cfg.sequence_len and row["labels"] == row["input_ids"]
        start = 0
        for i, p in enumerate([*row["position_ids"][1:], 0], start=1):
            if p == 0:
                windows[tuple(row["input_ids"][start:i])] += 1
                start = i
    theirs = Counter(tuple(w) for w in golden["windows"])
    assert len(theirs) > 20
    # Axolotl drops a chunk's last partial bin, so its windows are a subset of ours. The oracle's transformers
    # (5.16) stops a text's overflow windows after the second one, cut short (tokens after it are lost); 5.24
    # returns every window, so such a short second window is the start of one of ours.
    for window in theirs - windows:
        assert any(o[:len(window) - 1] == window[:-1] and o[-1] == window[-1] for o in windows), window
    assert sum((theirs - windows).values()) < sum(theirs.values()) // 2
    assert golden["bin_tokens"] == cfg.sequence_len * cfg.micro_batch_size  # its bins: mbs x seq_len tokens


def test_stream_is_deterministic_and_epochs_reshuffle(tokenizer) -> None:  # noqa: ANN001
    from mudpuppy.runtime.data.streaming import StreamedPretraining

    cfg = _config(json.loads((GOLDEN / "pretrain_packed.json").read_text()))
    a, b = StreamedPretraining(cfg, tokenizer), StreamedPretraining(cfg, tokenizer)
    assert _first(a, 20) == _first(b, 20)
    b.set_epoch(1)
    assert _first(a, 5) != _first(b, 5)


def test_completion_type_uses_its_field(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    from mudpuppy.runtime.data.streaming import StreamedPretraining

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"body": f"the river runs {i}"}) + "\n" for i in range(5)))
    cfg = load_config_text(f"base_model: {TOK}\nlearning_rate: 1e-3\nmax_steps: 2\nsample_packing: true\n"
                           f"sequence_len: 64\nshuffle_merged_datasets: false\npretraining_dataset:\n"
                           f"  - path: {data}\n    type: completion\n    field: body\n").config
    (row,) = list(StreamedPretraining(cfg, tokenizer))
    text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    assert all(f"the river runs {i}" in text for i in range(5))


BASE = f"base_model: {TOK}\nlearning_rate: 1e-3\npretraining_dataset:\n  - path: org/corpus\n"


@pytest.mark.parametrize(("extra", "needle"), [
    ("", "max_steps is required with pretraining_dataset"),
    ("max_steps: 3\nval_set_size: 0.1\n", "val_set_size is not supported with pretraining_dataset"),
    ("max_steps: 3\ndataset_exact_deduplication: true\n", "not available for streamed data"),
    ("max_steps: 3\ninclude_tokens_per_second: true\n", "cannot be used together"),
])
def test_axolotl_rules(extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + extra)
    assert any(needle in line for line in info.value.lines())


def test_bare_path_and_defaults() -> None:
    cfg = load_config_text(f"base_model: {TOK}\nlearning_rate: 1e-3\nmax_steps: 3\n"
                           "pretraining_dataset: org/corpus\n").config
    (entry,) = cfg.pretraining_dataset or []
    assert (entry.path, entry.type, entry.split, entry.text_column) == ("org/corpus", "pretrain", "train", "text")
    assert cfg.streaming_multipack_buffer_size == 10_000 and cfg.pretrain_multipack_attn is True


def test_missing_local_file_is_one_line(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    from mudpuppy.launcher.errors import UserError
    from mudpuppy.runtime.data.streaming import StreamedPretraining

    cfg = load_config_text(f"base_model: {TOK}\nlearning_rate: 1e-3\nmax_steps: 3\npretraining_dataset:\n"
                           f"  - path: {tmp_path}/nope.jsonl\n").config
    with pytest.raises(UserError, match="does not exist"):
        StreamedPretraining(cfg, tokenizer)


def test_axolotl_warnings_for_ignored_keys() -> None:
    loaded = load_config_text(BASE + "  - path: org/second\nmax_steps: 3\ndatasets:\n  - path: a.jsonl\n"
                              "    type: alpaca\n")
    assert any("only the first pretraining_dataset entry" in w for w in loaded.warnings)
    assert any("datasets are ignored when pretraining_dataset is set" in w for w in loaded.warnings)
    sft = load_config_text(f"base_model: {TOK}\nlearning_rate: 1e-3\nstreaming: true\nmax_steps: 2\n"
                           "datasets:\n  - path: a.jsonl\n    type: alpaca\n")
    assert any("streaming applies to pretraining_dataset here" in w for w in sft.warnings)


def test_e2e_stream_wraps_into_a_second_epoch(tokenizer, monkeypatch_module) -> None:  # noqa: ANN001
    """tests/e2e/test_streaming_pretrain.py reads 8 steps x 4 x 2 = 64 rows: more than one pass over the stream
    (``skip: 30`` leaves half the file), so its resume also crosses into the reshuffled second epoch."""
    from mudpuppy.runtime.data.streaming import StreamedPretraining

    cfg = load_config_text(f"base_model: {TOK}\nlearning_rate: 1e-3\nmax_steps: 8\nsample_packing: true\n"
                           "sequence_len: 64\nstreaming_multipack_buffer_size: 16\npretraining_dataset:\n"
                           "  - path: tests/data/golden/inputs/pretrain.jsonl\n    skip: 30\n").config
    rows = list(StreamedPretraining(cfg, tokenizer))
    assert 8 < len(rows) < 64
