"""``seed`` applied to every generator, and the limit of the CPU guarantee (README "Reproducibility")."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(60)


def test_seeding_repeats_every_generator_and_is_strict_only_on_cpu() -> None:
    import random

    import numpy as np
    import torch

    from mudpuppy.runtime.seeding import seed_everything

    was, was_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        draws = []
        for _ in range(2):
            seed_everything(7, device="cuda")  # seeds, but leaves CUDA's kernel choice alone
            assert torch.are_deterministic_algorithms_enabled() == was
            draws.append((random.random(), float(np.random.rand()), torch.rand(3).tolist()))
        assert draws[0] == draws[1]
        seed_everything(7, device="cpu")
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert (random.random(), float(np.random.rand()), torch.rand(3).tolist()) == draws[0]
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


def test_cpu_sums_depend_on_the_thread_count() -> None:
    """Why the CPU guarantee names one thread count: torch splits a reduction per thread, so the float sums
    round differently (the README's reason for "same machine, same OMP_NUM_THREADS")."""
    import torch

    threads = torch.get_num_threads()
    x = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0))
    try:
        sums = []
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            sums.append(x.sum())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(sums[0], sums[2])  # same thread count: the same bits
    assert not torch.equal(sums[0], sums[1])  # another thread count: another rounding
