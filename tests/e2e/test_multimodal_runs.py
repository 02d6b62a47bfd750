"""The README's multimodal example, run exactly as written, and what must hold around it: the loss falls, an
image prompt gets an answer, a merged model answers like the adapter, a SIGTERM'd and resumed run equals the
uninterrupted one bit for bit, ``launch --backend local`` (a run folder where only the bundle is reachable)
trains the same bits from the bundled images, and a bad image is one line before any training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mudpuppy.launcher.contract import EXIT_REQUEUE
from tests.e2e.test_resume_and_signals import KILL_AT_STEP, adapter_tensors, train_losses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
CFG = "examples/tiny-vision.yml"
OUT = "outputs/tiny-vision"


def _mp(cwd: Path, *args: str, prelude: str = "", env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    code = prelude + "\nimport sys\nfrom mudpuppy.launcher.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mudpuppy fetch examples && mudpuppy train examples/tiny-vision.yml``, as the README says."""
    root = tmp_path_factory.mktemp("readme")
    fetched = _mp(root, "fetch", "examples")
    assert fetched.returncode == 0, fetched.stderr
    trained = _mp(root, "train", CFG)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return root


def _variant(root: Path, name: str, **changes: Any) -> Path:
    cfg = yaml.safe_load((root / CFG).read_text())
    cfg.update(output_dir=f"outputs/{name}", **changes)
    path = root / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_readme_example_lowers_the_loss_and_answers_an_image_prompt(example: Path) -> None:
    losses = [loss for _, loss in train_losses(example / OUT)]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3, losses
    assert (example / OUT / "adapter_model.safetensors").is_file()
    assert json.loads((example / OUT / "processor_config.json").read_text())  # the processor ships with it
    ask = ["inference", CFG, "--image", "examples/tiny-vision/images/red_square.png", "--prompt",
           "Describe the image.", "--max-new-tokens", "6"]
    answer = _mp(example, *ask)
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr[-2000:]
    merged = _mp(example, "merge-lora", CFG)
    assert merged.returncode == 0, merged.stderr[-2000:]
    from_merged = _mp(example, *ask, "--base-model", f"{OUT}/merged")
    assert from_merged.returncode == 0, from_merged.stderr[-2000:]
    assert from_merged.stdout == answer.stdout  # greedy: the merged weights are the adapter's
    missing = _mp(example, "inference", CFG, "--image", "nope.png", "--prompt", "x")
    assert missing.returncode == 2 and "--image: nope.png does not exist" in missing.stderr


def test_sigterm_then_resume_equals_the_uninterrupted_run_bitwise(example: Path) -> None:
    split = _variant(example, "split", auto_resume_from_checkpoints=True)
    first = _mp(example, "train", str(split), prelude=KILL_AT_STEP, env={"KILL_AT": "3"})
    assert first.returncode == EXIT_REQUEUE, first.stderr[-2000:]
    assert not (example / "outputs/split/adapter_model.safetensors").exists()
    second = _mp(example, "train", str(split))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout
    assert train_losses(example / "outputs/split") == train_losses(example / OUT)
    import torch

    whole, resumed = adapter_tensors(example / OUT), adapter_tensors(example / "outputs/split")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_launch_local_trains_from_the_bundled_images(example: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(example / "examples", project / "examples")
    launched = _mp(project, "launch", CFG, "--backend", "local", "--name", "vision",
                   env={"MUDPUPPY_STATE_DIR": str(tmp_path / "state")})
    assert launched.returncode == 0, launched.stderr[-3000:]
    # the run's work folder is under the state dir: the images it read can only have come from the bundle
    assert train_losses(project / OUT) == train_losses(example / OUT)
    import torch

    a, b = adapter_tensors(example / OUT), adapter_tensors(project / OUT)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_missing_image_stops_the_run_with_one_line(example: Path) -> None:
    data = example / "bad.jsonl"
    rows = (example / "examples/tiny-vision/captions.jsonl").read_text().splitlines()
    rows[2] = rows[2].replace("yellow_stripe.png", "yellow_strip.png")
    data.write_text("\n".join(rows) + "\n")
    bad = _variant(example, "bad", datasets=[{"path": "bad.jsonl", "type": "chat_template"}])
    proc = _mp(example, "train", str(bad))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "bad.jsonl: row 2: field 'messages[0].content[0]': image file " \
           "examples/tiny-vision/images/yellow_strip.png does not exist" in errors[0]
    skipped = _mp(example, "train", str(_variant(example, "skip", datasets=[{"path": "bad.jsonl",
                                                                                "type": "chat_template"}],
                                                 skip_invalid_rows=True, max_steps=1)))
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert "7 train rows" in skipped.stdout
    checked = _mp(example, "preprocess", "skip.yml")
    assert checked.returncode == 0 and "multimodal rows checked: 7 train, 0 eval, 1 skipped" in checked.stdout
    evaluated = _mp(example, "evaluate", CFG)  # the README run's adapter on its own rows, multimodal collator
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "eval_loss" in evaluated.stdout
