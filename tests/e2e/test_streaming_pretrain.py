"""Streamed pretraining end to end: a run killed by SIGTERM and resumed ends bit-identical to one run straight
through (each its own process), so the resumed stream continues exactly where the first process stopped. The
64 rows the run reads are more than one pass over the (skipped) stream, so the second epoch is covered too."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudpuppy.launcher.contract import EXIT_REQUEUE
from tests.e2e.conftest import REPO, run_runtime
from tests.e2e.test_resume_and_signals import KILL_AT_STEP, adapter_tensors, train_losses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
DATA = REPO / "tests" / "data" / "golden" / "inputs" / "pretrain.jsonl"


def _streamed(tiny_cfg, name: str, **extra):  # noqa: ANN001, ANN202
    return tiny_cfg(name, datasets=None, pretraining_dataset=[{"path": str(DATA), "type": "pretrain", "skip": 30}],
                    streaming_multipack_buffer_size=16, sequence_len=64, max_steps=8, save_steps=2,
                    micro_batch_size=4, **extra)


def test_streamed_pretraining_resumes_bitwise(tiny_cfg) -> None:  # noqa: ANN001
    whole_path, whole = _streamed(tiny_cfg, "whole")
    done = run_runtime([str(whole_path)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "streamed train rows" in done.stdout

    split_path, split = _streamed(tiny_cfg, "split", auto_resume_from_checkpoints=True)
    first = run_runtime([str(split_path)], env={"KILL_AT": "3"}, prelude=KILL_AT_STEP)
    assert first.returncode == EXIT_REQUEUE, first.stderr[-2000:]
    second = run_runtime([str(split_path)])
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout

    out, whole_out = Path(split["output_dir"]), Path(whole["output_dir"])
    losses = train_losses(whole_out)
    assert [s for s, _ in losses] == list(range(1, 9))
    assert train_losses(out) == losses
    assert losses[-1][1] < losses[0][1]
    import torch

    a, b = adapter_tensors(whole_out), adapter_tensors(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
