"""Chaos: a real tiny training run, killed and relaunched on a fresh "machine" each time, ends with the same
weights as an uninterrupted run, and never loses more than the steps since the last checkpoint on the volume.

Every relaunch gets an empty output_dir, so all progress must come back from the volume (moto's S3 server,
reached through a proxy that can freeze one upload so the kill lands mid-checkpoint-upload). Sequence:

1. SIGKILL while checkpoint-4's files are half uploaded (its manifest never lands);
2. relaunch: must resume from checkpoint-2 (warning about the partial checkpoint-4); SIGKILL at a random step;
3. relaunch: resumes from the newest complete checkpoint on the volume; SIGTERM -> saves at the next step
   boundary, uploads, exits 75 with zero steps lost;
4. relaunch: resumes from that step and finishes; final adapter == uninterrupted run's adapter.

Random points come from MUDPUPPY_CHAOS_SEED (printed on failure) so a failing sequence can be replayed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mudpuppy.launcher.contract import ENV_RUN_ID, ENV_VOLUME, EXIT_OK, EXIT_REQUEUE
from mudpuppy.runtime.checkpoints.sync import newest_remote_step
from mudpuppy.runtime.checkpoints.volume import Volume, open_volume
from mudpuppy.tests.infra.s3 import HoldingProxy, S3Server, s3_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = Path(__file__).resolve().parents[2] / "templates" / "examples"
STEP_LINE = re.compile(r"^step (\d+)/(\d+) \| loss")
RESUME_LINE = re.compile(r"resuming from \S*checkpoint-(\d+)")
TOTAL_STEPS = 14


class Run:
    """One `python -m mudpuppy.runtime` process in its own session, its output collected line by line."""

    def __init__(self, workdir: Path, output_dir: str, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mudpuppy.runtime", "cfg.yml", "--output_dir", output_dir],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def steps(self) -> list[int]:
        return [int(m.group(1)) for line in list(self.lines) if (m := STEP_LINE.match(line))]

    def wait_for_step(self, step: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(s >= step for s in self.steps()):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"never reached step {step}:\n" + self.output())
                self._cond.wait(0.5)

    def resumed_from(self) -> int | None:
        for line in self.lines:
            if m := RESUME_LINE.search(line):
                return int(m.group(1))
        return None

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 240) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # let the reader thread drain the pipe
        return code

    def output(self) -> str:
        return "\n".join(self.lines[-60:])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    text = (EXAMPLES / "tiny-alpaca.yml").read_text()
    for old, new in [
        ("val_set_size: 0.05", "val_set_size: 0"),
        ("num_epochs: 1", "num_epochs: 2"),
        ("logging_steps: 2", "logging_steps: 1"),
        ("save_steps: 10", "save_steps: 2"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "cfg.yml").write_text(text)
    return tmp_path


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[HoldingProxy]:  # noqa: F811
    p = HoldingProxy(s3_server.endpoint)
    yield p
    p.close()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MUDPUPPY_"))}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    return env


def _adapter(path: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_killed_and_relaunched_run_matches_uninterrupted(
    workdir: Path,
    s3_server: S3Server,  # noqa: F811
    proxy: HoldingProxy,
) -> None:
    import torch

    seed = int(os.environ.get("MUDPUPPY_CHAOS_SEED", random.randrange(1 << 16)))
    rng = random.Random(seed)
    bucket = s3_server.bucket("chaos")
    url = f"s3://{bucket}/run"
    direct: Volume = open_volume(url, s3_server.storage_options)  # bypasses the proxy
    env = _env({**s3_server.env, "AWS_ENDPOINT_URL": proxy.endpoint, ENV_VOLUME: url, ENV_RUN_ID: "chaos"})
    context = f"MUDPUPPY_CHAOS_SEED={seed}"

    baseline = Run(workdir, "m0/out", _env({ENV_RUN_ID: "baseline"}))
    assert baseline.wait() == EXIT_OK, baseline.output()

    # 1. freeze the 3rd file PUT of checkpoint-4, then SIGKILL: checkpoint-4 is half on the volume.
    puts: list[str] = []

    def third_put_of_ckpt4(line: str) -> bool:
        if line.startswith("PUT ") and "/checkpoint-4/" in line and "manifest" not in line:
            puts.append(line)
        return len(puts) >= 3

    proxy.hold_on(third_put_of_ckpt4)
    first = Run(workdir, "m1/out", env)
    assert proxy.held.wait(180), f"{context}: upload of checkpoint-4 never started\n{first.output()}"
    first.signal(signal.SIGKILL)
    first.wait()
    proxy.release_all()
    assert newest_remote_step(direct) == 2, context
    assert any(rel.startswith("checkpoint-4/") for rel in direct.sizes()), "checkpoint-4 should be partial"

    # 2. fresh machine: resumes from checkpoint-2 (not the partial 4); SIGKILL at a random step.
    kill_at = rng.randint(5, 9)
    second = Run(workdir, "m2/out", env)
    second.wait_for_step(kill_at)
    time.sleep(rng.uniform(0, 0.8))
    second.signal(signal.SIGKILL)
    second.wait()
    assert second.resumed_from() == 2, f"{context}\n{second.output()}"
    assert "checkpoint-4" in second.output() and "incomplete" in second.output(), second.output()
    reached = max(second.steps())
    on_volume = newest_remote_step(direct)
    assert on_volume is not None and on_volume >= 2, context
    # At most the steps since the last verified checkpoint are lost (save_steps=2, plus one in-flight upload).
    assert reached - on_volume <= 4, f"{context}: reached {reached}, volume has {on_volume}"

    # 3. fresh machine: resumes from the volume's newest; SIGTERM -> save at next step, upload, exit 75.
    third = Run(workdir, "m3/out", env)
    term_after = min(on_volume + rng.randint(1, 2), TOTAL_STEPS - 2)
    third.wait_for_step(term_after)
    third.signal(signal.SIGTERM)
    code = third.wait()
    assert third.resumed_from() == on_volume, f"{context}\n{third.output()}"
    assert code == EXIT_REQUEUE, f"{context}\n{third.output()}"
    last = max(third.steps())
    assert newest_remote_step(direct) == last, f"{context}: SIGTERM must lose zero steps (last step {last})"

    # 4. fresh machine: finishes; same weights as the uninterrupted run, outputs on the volume.
    fourth = Run(workdir, "m4/out", env)
    assert fourth.wait() == EXIT_OK, f"{context}\n{fourth.output()}"
    assert fourth.resumed_from() == last, f"{context}\n{fourth.output()}"
    expected = _adapter(workdir / "m0" / "out")
    got = _adapter(workdir / "m4" / "out")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), f"{context}: {name} differs after kill/resume"  # type: ignore[arg-type]
    final = direct.sizes()
    assert "adapter_model.safetensors" in final and "mudpuppy-outputs.json" in final
