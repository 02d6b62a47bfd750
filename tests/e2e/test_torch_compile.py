"""``torch_compile: true`` on CPU: the tiny LoRA run goes through torch.compile (inductor, C++ codegen with gcc),
trains, and its per-step losses match the same run uncompiled (both in-process runs of the real runtime).

Dropout is off so both runs draw the same numbers; packing gives one fixed shape, so inductor compiles once
(about 60-150 s of CPU on 2 cores, cold cache). Needs g++ (tests/infra/install-deps.sh); without it the test fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mudpuppy.runtime.entry import run_location

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _losses(tiny_cfg, name: str, **overrides) -> list[float]:
    path, cfg = tiny_cfg(name, lora_dropout=0.0, max_steps=2, gradient_accumulation_steps=1, save_steps=100,
                         **overrides)
    assert run_location(str(path)) == 0
    rows = [json.loads(line) for line in (Path(cfg["output_dir"]) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_compiled_lora_run_matches_eager(tiny_cfg, monkeypatch, tmp_path):
    import torch._dynamo

    # a cold cache of our own (a warm one would hide compile failures); one compile thread: CI has 2 cores
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")

    compiled_calls = []
    real_compile = torch.compile

    def spy(model, *args, **kwargs):
        compiled_calls.append(kwargs.get("backend"))
        return real_compile(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    eager = _losses(tiny_cfg, "eager")
    assert compiled_calls == []
    torch._dynamo.reset()
    compiled = _losses(tiny_cfg, "compiled", torch_compile=True, torch_compile_backend="inductor")
    assert compiled_calls == ["inductor"]  # the Trainer really compiled the model, with the configured backend
    assert len(eager) == len(compiled) == 2
    assert eager[-1] < eager[0]  # it learns, so matching curves mean something
    assert compiled == pytest.approx(eager, rel=2e-3, abs=2e-3)
