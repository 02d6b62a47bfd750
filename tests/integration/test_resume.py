"""``mudpuppy resume RUN --backend B``: a local run with a ``file://`` volume is SIGKILLed once checkpoint-4 reached
the volume (its machine and disk are then thrown away), and the run goes on elsewhere from the volume:

- on the test SLURM cluster (1 node): final adapter bitwise equal to an uninterrupted run started as its own
  process (``python -m mudpuppy.runtime``), and the same loss at every step after the kill;
- on the local Ray cluster (1 worker): the same;
- with 2 processes where the first attempt had 1 (FSDP2, DCP checkpoints resharded on load): the loss goes on.

The registry links the attempts (``parent_id``). Refusals: no volume, finished, still running."""

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

from mudpuppy.tests.infra.helpers import mp, one_line_error, require, runtime_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
KILLER = "mudpuppy.tests.infra.kill_after_upload"
EXAMPLES = Path(__file__).resolve().parents[2] / "templates" / "examples"
THREADS = {"OMP_NUM_THREADS": "1"}  # one thread everywhere: float sums then round alike on every backend


@pytest.fixture(autouse=True)
def _runtime() -> None:
    require(runtime_missing())


def config(out: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "base_model": str(EXAMPLES / "tiny-llama"), "reinit_weights": True, "seed": 7,
        "datasets": [{"path": str(EXAMPLES / "data" / "alpaca_tiny.jsonl"), "type": "alpaca"}],
        "sequence_len": 128, "sample_packing": True, "adapter": "lora", "lora_r": 4, "lora_alpha": 8,
        "lora_dropout": 0.1, "lora_target_linear": True, "micro_batch_size": 2, "gradient_accumulation_steps": 2,
        "max_steps": 8, "learning_rate": 0.005, "optimizer": "adamw_torch", "lr_scheduler": "cosine",
        "warmup_steps": 1, "logging_steps": 1, "save_steps": 2, "val_set_size": 0, "dataloader_num_workers": 0,
        "output_dir": str(out),
    }
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not None}


def write(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def assert_bitwise(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


def status(run: str, env: dict[str, str] | None = None) -> dict:
    return json.loads(mp("status", run, "--json", timeout=120, env=env).stdout)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, started as its own process (once for the module)."""
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "out-reference"
    cfg = write(folder / "reference.yml", config(out))
    proc = subprocess.run([sys.executable, "-m", "mudpuppy.runtime", str(cfg)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **THREADS, "HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def killed_local_run(project: Path, name: str, *extra: str, ranks: int = 1, **overrides: Any
                     ) -> tuple[str, Path, Path]:
    """A local run with a file:// volume, SIGKILLed after checkpoint-4 reached the volume; its output folder is
    then deleted (the machine is gone). Returns (run id, output_dir, volume folder)."""
    out, volume = project / f"out-{name}", project / f"vol-{name}"
    cfg = write(project / f"{name}.yml", config(out, **overrides))
    proc = mp("launch", str(cfg), "--backend", "local", "--retries", "0", "--name", name,
              "--launch.volume", f"file://{volume}", "--launch.entrypoint", KILLER, "--launch.env.KILL_AFTER", "4",
              "--launch.env.OMP_NUM_THREADS", "1", *extra, timeout=600)
    log = mp("logs", name).stdout
    assert proc.returncode == 1 and log.count("SIGKILL at step 5") == ranks, proc.stderr[-2000:] + log[-3000:]
    run = status(name)
    assert run["status"] == "failed", run
    assert (volume / "checkpoint-4" / "mudpuppy-manifest.json").is_file()
    assert not (volume / "mudpuppy-outputs.json").exists() and not (out / "adapter_model.safetensors").exists()
    shutil.rmtree(out)
    return run["id"], out, volume


def check_chain(run: str, new: str, backend: str, env: dict[str, str] | None = None) -> None:
    rows = {r["id"]: r for r in map(json.loads, mp("runs", "--json", env=env).stdout.splitlines())}
    assert rows[new]["parent_id"] == run and rows[new]["backend"] == backend and rows[run]["parent_id"] is None
    assert rows[new]["name"] == rows[run]["name"]


def test_resume_on_slurm_equals_the_uninterrupted_run_bitwise(slurm: Any, project: Path, ref: Path) -> None:
    run, out, volume = killed_local_run(project, "to-slurm")
    proc = mp("resume", run, "--backend", "slurm", "--launch.slurm.workdir", str(project / "shared"),
              "--launch.slurm.python", sys.executable, "--launch.slurm.master_port", "29553",
              "--launch.entrypoint", "mudpuppy.runtime", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert f"continues {run} from checkpoint-4 on file://{volume}" in proc.stderr
    new = next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("run ") and "submitted" in line)
    assert status(new)["status"] == "succeeded"
    log = mp("logs", new).stdout
    assert "restored checkpoint-4" in log or "resuming from" in log, log[-3000:]
    assert_bitwise(adapter(out), adapter(ref))
    assert {s: v for s, v in losses(out).items() if s > 4} == {s: v for s, v in losses(ref).items() if s > 4}
    assert min(losses(out)) == 5  # no step before the checkpoint was trained again
    assert (volume / "mudpuppy-outputs.json").is_file()
    check_chain(run, new, "slurm")
    # a finished run is not resumed again: one line saying where its outputs are
    err = one_line_error(mp("resume", new, "--backend", "local"))
    assert "has finished" in err and "mudpuppy pull" in err
    err = one_line_error(mp("resume", run, "--backend", "local"))
    assert "has finished" in err and str(volume) in err


@pytest.fixture(scope="module")
def ray_address() -> Any:
    pytest.importorskip("ray.train")
    from tests.infra.ray import ray_cluster

    with ray_cluster(num_cpus=2) as cluster:
        yield cluster.address


def test_resume_on_ray_equals_the_uninterrupted_run_bitwise(ray_address: str, project: Path, ref: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.infra.ray import ray_env

    for key, value in ray_env().items():
        if key.startswith("RAY_") or key == "PATH":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    run, out, volume = killed_local_run(project, "to-ray")
    proc = mp("resume", run, "--backend", "ray", "--launch.ray.num_workers", "1",
              "--launch.ray.workdir", str(project / "ray-work"), "--launch.entrypoint", "mudpuppy.runtime",
              timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert f"continues {run} from checkpoint-4 on file://{volume}" in proc.stderr
    new = next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("run ") and "submitted" in line)
    assert "restored checkpoint-4 from file://" in proc.stdout or "resuming from" in proc.stdout, proc.stdout[-3000:]
    check_chain(run, new, "ray")
    # the final outputs reached the volume; pull brings them here, sha256-checked
    pulled = mp("pull", new, "--to", "got")
    assert pulled.returncode == 0, pulled.stderr
    got = project / "got"
    assert_bitwise(adapter(got), adapter(ref))
    assert {s: v for s, v in losses(got).items() if s > 4} == {s: v for s, v in losses(ref).items() if s > 4}


# Full fine-tune (the loss falls fast: 6.9 -> 5.8 by step 4, so a restart from scratch would show) with FSDP2
# and sharded (DCP) checkpoints, as in tests/distributed/recipe.py.
FSDP = {
    "adapter": None, "lora_r": None, "lora_alpha": None, "lora_dropout": None, "lora_target_linear": None,
    "sample_packing": None, "sequence_len": 64, "micro_batch_size": 1, "gradient_accumulation_steps": 1,
    "learning_rate": 0.01, "lr_scheduler": "constant", "warmup_steps": None, "fsdp_version": 2,
    "fsdp_config": {"fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                    "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer", "reshard_after_forward": True},
}


def test_resume_on_twice_the_nodes_reshards_fsdp2_checkpoints(slurm: Any, project: Path) -> None:
    """1 node x 2 processes (local), killed after checkpoint-4; resumed on 2 SLURM nodes x 2 processes: the
    2-shard DCP checkpoint loads on 4 ranks, training goes on from step 5 at the loss it had reached, and the
    new checkpoints have 4 shards."""
    run, out, volume = killed_local_run(project, "reshard", "--launch.local.nproc_per_node", "2", ranks=2, **FSDP)
    shards = volume / "checkpoint-4" / "pytorch_model_fsdp_0"
    assert len(list(shards.glob("*.distcp"))) == 2
    first = {int(line.split()[1].split("/")[0]): float(line.split("loss ")[1].split()[0])
             for line in mp("logs", run).stdout.splitlines() if line.startswith("step ") and "| loss " in line}
    assert sorted(first)[:4] == [1, 2, 3, 4], first
    proc = mp("resume", run, "--backend", "slurm", "--nodes", "2", "--launch.slurm.nproc_per_node", "2",
              "--launch.slurm.cpus_per_task", "1", "--launch.slurm.workdir", str(project / "shared"),
              "--launch.slurm.python", sys.executable, "--launch.slurm.master_port", "29554",
              "--launch.entrypoint", "mudpuppy.runtime", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert f"continues {run} from checkpoint-4" in proc.stderr
    after = losses(out)
    assert min(after) == 5 and max(after) == 8, after
    # the loss goes on from where the first attempt was (5.8 at step 4), far below a fresh start (6.9)
    assert all(loss < first[1] - 0.8 for loss in after.values()), (first, after)
    assert abs(after[5] - first[4]) < 1.0, (first, after)
    assert len(list((volume / "checkpoint-8" / "pytorch_model_fsdp_0").glob("*.distcp"))) == 4
    assert (volume / "mudpuppy-outputs.json").is_file()


def test_refusals(project: Path) -> None:
    from mudpuppy.launcher.registry import Registry

    registry = Registry()
    rec = registry.create(name="novol", backend="local", bundle_hash="0" * 64, config_path="/x.yml",
                          launch=json.dumps({"backend": "local"}))
    registry.update(rec.id, status="failed", handle=f"local://h/{rec.id}")
    err = one_line_error(mp("resume", rec.id, "--backend", "slurm"))
    assert "has no volume" in err
    rec = registry.create(name="busy", backend="local", bundle_hash="0" * 64, config_path="/x.yml",
                          launch=json.dumps({"backend": "local", "volume": f"file://{project}/v"}))
    registry.update(rec.id, status="running")
    (project / "v").mkdir()
    assert "still running" in one_line_error(mp("resume", rec.id))
    registry.update(rec.id, status="cancelled")
    err = one_line_error(mp("resume", rec.id, "--learning_rate", "1"))
    assert "launch.* keys" in err and "learning_rate" in err
    err = one_line_error(mp("resume", rec.id, "--launch.volume", f"file://{project}/elsewhere"))
    assert "not to file://" in err
    assert "no longer on this machine" in one_line_error(mp("resume", rec.id))
    child = registry.create(name="busy", backend="slurm", bundle_hash="0" * 64, config_path="/x.yml",
                            launch=json.dumps({"backend": "slurm", "volume": f"file://{project}/v"}), parent_id=rec.id)
    registry.update(child.id, status="pending")
    err = one_line_error(mp("resume", rec.id, "--backend", "local"))
    assert f"already being continued by {child.id}" in err
