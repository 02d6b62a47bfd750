"""Whole-column Arrow access to a ``datasets.Dataset`` without datasets' per-row machinery.

``dataset.with_format("arrow")[:]`` on a shuffled or selected dataset gathers the rows one slice per row, and
``datasets.Dataset(table)`` without a fingerprint hashes every byte of the table (dill-pickling it) to make
one: at 100k tokenized rows each costs about a second on the serial path. Here the index mapping is applied with
one Arrow ``take`` and new datasets get a fingerprint derived from their parent's and the step's name.
"""

from __future__ import annotations

import hashlib
from typing import Any


def table_of(dataset: Any, columns: list[str] | None = None) -> Any:
    """The rows of ``dataset`` (only ``columns`` when given) as one ``pa.Table``, in the dataset's order."""
    table = dataset.data.table
    if columns is not None:
        table = table.select(columns)
    indices = getattr(dataset, "_indices", None)
    if indices is not None:  # one contiguous copy first: take over many chunks costs about twice as much
        table = table.combine_chunks().take(indices.column(0))
    return table


def list_lengths(dataset: Any, column: str) -> Any:
    """Per row of ``dataset``, in its order, the length of the list in ``column`` (int64 numpy): computed on the
    stored rows and then permuted, so a shuffled dataset's lists are not gathered to count them."""
    import numpy as np
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.data.table.column(column)).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    indices = getattr(dataset, "_indices", None)
    if indices is not None:
        lengths = lengths[indices.column(0).to_numpy(zero_copy_only=False).astype(np.int64)]
    return lengths


def child_fingerprint(parent: Any, step: str) -> str:
    """A stable fingerprint for the dataset that ``step`` makes from ``parent`` (datasets' own is a full hash)."""
    seed = f"{getattr(parent, '_fingerprint', None) or ''}|{step}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def dataset_from(table: Any, parent: Any, step: str, features: Any = None) -> Any:
    """``datasets.Dataset`` over ``table`` (cast to ``features`` when given) without hashing the table."""
    import datasets

    info = None
    if features is not None:
        table = table.cast(features.arrow_schema)
        info = datasets.DatasetInfo(features=features)
    return datasets.Dataset(table, info=info, fingerprint=child_fingerprint(parent, step))
