"""``splice_diff`` gives the span ``diff_span`` finds between a rendered text and that text with one span swapped
for a placeholder, without building the second text: fuzzed against ``diff_span`` on the built text, with
small alphabets so contents and placeholders share edge characters (the cases the edge loops handle)."""

from __future__ import annotations

import random

import pytest

from mudpuppy.runtime.data.chat import SENTINELS, diff_span, splice_diff

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("alphabet", ["ab", "ab[]z", "[dumy_esag]z"])
def test_splice_diff_matches_diff_span(alphabet: str) -> None:
    rng = random.Random(alphabet)
    for _ in range(20_000):
        full = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        at = rng.randint(0, len(full))
        size = rng.randint(0, len(full) - at)
        mark = rng.choice([*SENTINELS, "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))])
        budget = rng.choice([64, 0, 1, 3])
        assert splice_diff(full, at, size, mark, budget) == diff_span(full, full[:at] + mark + full[at + size:]), \
            (full, at, size, mark, budget)
