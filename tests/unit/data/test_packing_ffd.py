"""``pack_lengths`` places whole runs of equal lengths at once; its bins must be exactly what the textbook
first-fit-decreasing gives (rows sorted by length descending, stable; each into the first open bin with room
and fewer than ``bin_size`` rows, else a new bin), written here row by row as the reference."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mudpuppy.runtime.data.packing import pack_lengths

pytestmark = pytest.mark.timeout(120)


def reference(lengths: list[int], capacity: int, group_size: int, bin_size: int) -> list[list[int]]:
    bins: list[list[int]] = []
    for offset in range(0, len(lengths), group_size):
        group = lengths[offset: offset + group_size]
        order = sorted(range(len(group)), key=lambda i: -group[i])  # sorted() is stable
        rooms: list[int] = []
        members: list[list[int]] = []
        for i in order:
            for j, room in enumerate(rooms):
                if room >= group[i] and len(members[j]) < bin_size:
                    break
            else:
                j = len(rooms)
                rooms.append(capacity)
                members.append([])
            rooms[j] -= group[i]
            members[j].append(offset + i)
        bins.extend(members)
    return bins


@pytest.mark.parametrize("seed", range(40))
def test_equal_length_runs_give_the_row_by_row_bins(seed: int) -> None:
    rng = random.Random(seed)
    capacity = rng.choice([1, 7, 64, 1024])
    top = rng.choice([capacity, max(1, capacity // 3), 3])
    lengths = [rng.randint(0 if seed % 5 == 0 else 1, min(top, capacity)) for _ in range(rng.randint(0, 600))]
    group = rng.choice([1, 5, 100, 100_000])
    bin_size = rng.choice([1, 2, 3, 200])
    assert pack_lengths(lengths, capacity, group, bin_size) == reference(lengths, capacity, group, bin_size)
    assert pack_lengths(np.array(lengths, dtype=np.int64), capacity, group, bin_size) == \
        reference(lengths, capacity, group, bin_size)
