"""Issue 20.7: publishing a prepared dataset when another writer got there first neither fails nor corrupts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import datasets
import pytest

from mudpuppy.runtime.data import cache
from mudpuppy.runtime.data.pipeline import Stats

pytestmark = pytest.mark.timeout(60)


def test_second_writer_discards_its_copy_when_the_first_already_published(tmp_path):
    cfg = SimpleNamespace(dataset_prepared_path=str(tmp_path / "prepared"))
    first = datasets.Dataset.from_dict({"input_ids": [[1, 2]], "attention_mask": [[1, 1]], "labels": [[1, 2]]})
    second = datasets.Dataset.from_dict({"input_ids": [[7]], "attention_mask": [[1]], "labels": [[7]]})
    assert cache.save(cfg, "k", first, None, Stats(train_rows=1)) == tmp_path / "prepared" / "k"
    # the race: this writer checked before the other one renamed; its own rename must not fail
    assert cache.save(cfg, "k", second, None, Stats(train_rows=2)) == tmp_path / "prepared" / "k"
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == ["k"]  # no temporary folder left behind
    train, _, saved = cache.load(cfg, "k")
    assert train["input_ids"] == [[1, 2]] and saved["train_rows"] == 1  # the winner's copy, intact
    assert json.loads((tmp_path / "prepared" / "k" / "stats.json").read_text())["train_rows"] == 1


def test_a_foreign_folder_in_the_way_is_not_silently_accepted(tmp_path):
    cfg = SimpleNamespace(dataset_prepared_path=str(tmp_path / "prepared"))
    (tmp_path / "prepared" / "k").mkdir(parents=True)
    (tmp_path / "prepared" / "k" / "junk").write_text("x")  # not a complete cache (no stats.json)
    rows = datasets.Dataset.from_dict({"input_ids": [[1]], "attention_mask": [[1]], "labels": [[1]]})
    with pytest.raises(OSError):
        cache.save(cfg, "k", rows, None, Stats())
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == ["k"]
