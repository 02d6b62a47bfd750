"""Sweeps on the backends without a local service: every SkyPilot member is its own managed job whose task SkyPilot's
own parser accepts, and every Modal member its own app run whose objects Modal builds offline; members differ in
run, bundle and output folder, never in resources. SLURM arrays run on the real cluster in
tests/integration/test_sweep_slurm.py; local sweeps in tests/integration/test_sweep_local.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher import dispatch
from mudpuppy.launcher.sweep_launch import prepare_group
from tests.infra.tiny_bundle import tiny_config

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(dispatch, "mudpuppy_wheel", lambda cache: None)
    return tmp_path


def test_skypilot_members_are_managed_jobs_skypilot_parses(offline: Path) -> None:
    python = os.environ.get("MUDPUPPY_SKYPILOT_PYTHON") or str(ROOT / ".venv-sky" / "bin" / "python")
    if not Path(python).exists():
        if os.environ.get("MUDPUPPY_REQUIRE_EXTRAS"):
            pytest.fail(f"no SkyPilot environment at {python}: run `make sky-venv`")
        pytest.skip(f"no SkyPilot environment at {python} (make sky-venv)")
    from mudpuppy.backends.skypilot import call_driver, to_yaml

    config = tiny_config(offline, {"backend": "skypilot", "gpus": "A10G:1", "spot": True,
                                   "skypilot": {"bucket": "s3://ckpt/runs"}})
    group = prepare_group(str(config), {}, ["learning_rate=1e-4,2e-4", "lora_r=8,16"])
    plans = [p.plan for p in group.prepared]
    assert len(plans) == 4 and all(p.extra["managed"] and p.session == "managed" for p in plans)
    tasks = [p.extra["task"] for p in plans]
    checked = call_driver(python, "validate", {"tasks": [to_yaml(t) for t in tasks]}, timeout=300)["tasks"]
    run_ids = set()
    for task, parsed in zip(tasks, checked, strict=True):
        assert parsed["stable"] and parsed["dumped"]["envs"] == task["envs"]
        assert task["resources"] == tasks[0]["resources"]  # one shape for the group
        run_ids.add(task["envs"]["MUDPUPPY_RUN_ID"])
    assert len(run_ids) == 4 and len({p.bundle_digest for p in plans}) == 4
    assert [p.output_dir for p in group.prepared] == [f"outputs/tiny-alpaca/{m.name}" for m in group.members]


def test_modal_members_are_app_runs_modal_builds_offline(offline: Path) -> None:
    modal = pytest.importorskip("modal")
    from mudpuppy.backends.modal_app import build_app

    config = tiny_config(offline, {"backend": "modal", "gpus": "A10G", "modal": {"app_name": "sweep-app"}})
    group = prepare_group(str(config), {}, ["learning_rate=1e-4,3e-4"])
    parts = [build_app(p.plan.extra["spec"]) for p in group.prepared]
    assert all(isinstance(x.function, modal.Function) and x.app.name == "sweep-app" for x in parts)
    jobs = [p.plan.extra["spec"]["job"] for p in group.prepared]
    assert jobs[0]["bundle"] != jobs[1]["bundle"]  # each member's bundle is baked into its own image
    assert jobs[0]["env"]["MUDPUPPY_WORKDIR"] != jobs[1]["env"]["MUDPUPPY_WORKDIR"]
    assert [x.settings["gpu"] for x in parts] == ["A10G:1", "A10G:1"]
    rendered = [yaml.safe_load(p.plan.script.split("\n", 1)[1]) for p in group.prepared]
    assert rendered[0]["job"]["env"]["MUDPUPPY_RUN_ID"] != rendered[1]["job"]["env"]["MUDPUPPY_RUN_ID"]
