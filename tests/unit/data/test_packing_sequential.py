"""``sample_packing_sequentially``: Axolotl's sequential allocator (next fit, dataset order), through the config."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mudpuppy.runtime.data.packing import pack_dataset, pack_lengths

pytestmark = pytest.mark.timeout(120)


def test_worked_example_matches_axolotls_allocator() -> None:
    # allocate_sequentially([5, 3, 4, 2, 6, 1], capacity 8): 5+3 | 4+2 | 6+1; first-fit decreasing differs
    assert pack_lengths([5, 3, 4, 2, 6, 1], 8, sequential=True) == [[0, 1], [2, 3], [4, 5]]
    assert pack_lengths([5, 3, 4, 2, 6, 1], 8) != [[0, 1], [2, 3], [4, 5]]


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), max_size=300))
def test_sequential_bins_keep_order_fit_and_are_next_fit(lengths) -> None:  # noqa: ANN001
    bins = pack_lengths(lengths, 64, sequential=True)
    assert [i for b in bins for i in b] == list(range(len(lengths)))
    for b in bins:
        assert b and sum(lengths[i] for i in b) <= 64
    for prev, nxt in zip(bins, bins[1:], strict=False):  # a bin closes only when the next row does not fit
        assert sum(lengths[i] for i in prev) + lengths[nxt[0]] > 64


def test_packed_dataset_keeps_row_order() -> None:
    import datasets

    rows = datasets.Dataset.from_dict({"input_ids": [[1] * 5, [2] * 3, [3] * 4, [4] * 2],
                                       "labels": [[1] * 5, [2] * 3, [3] * 4, [4] * 2]})
    packed, _ = pack_dataset(rows, 8, sequential=True)
    assert packed["input_ids"] == [[1] * 5 + [2] * 3, [3] * 4 + [4] * 2]
    assert packed["position_ids"][1] == [0, 1, 2, 3, 0, 1]


def test_config_key_packs_the_tokenized_rows_in_order(tmp_path, make_cfg) -> None:  # noqa: ANN001
    from mudpuppy.runtime.data import prepare
    from tests.unit.data.conftest import write_jsonl

    rows = [{"instruction": "Say " + "word " * (i % 7), "input": "", "output": f"{i}"} for i in range(20)]
    path = str(write_jsonl(tmp_path / "a.jsonl", rows))
    keys = {"datasets": [{"path": path, "type": "alpaca"}], "sample_packing": True, "sequence_len": 64,
            "shuffle_merged_datasets": False, "dataset_prepared_path": str(tmp_path / "prep")}
    seq = prepare(make_cfg(sample_packing_sequentially=True, **keys))
    lengths = [len(r) for r in seq.train["input_ids"]]
    assert seq.train_packed["seq_lens"] == [[lengths[i] for i in b] for b in pack_lengths(lengths, 64,
                                                                                          sequential=True)]
    default = prepare(make_cfg(**keys))
    assert default.train_packed["seq_lens"] != seq.train_packed["seq_lens"]
