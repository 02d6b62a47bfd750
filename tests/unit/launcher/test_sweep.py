"""``launch --sweep``: the grid, member names and folders, values typed and checked by the config schema before
anything is submitted (one line through the real CLI), the group dry run (one SLURM array with its ``%``
throttle, bundles that differ only by the swept value), and `runs --group` ranking."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry, RunRecord
from mudpuppy.launcher.sweep import expand, member_name, parse_axes
from mudpuppy.launcher.sweep_report import MemberResult, rank, summarize
from mudpuppy.tests.infra.helpers import mp, one_line_error

pytestmark = pytest.mark.timeout(300)

EXAMPLES = Path(__file__).resolve().parents[3] / "templates" / "examples"
CFG = "examples/tiny-alpaca.yml"


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def test_grid_members_names_folders_and_volume_prefixes(project: Path) -> None:
    members = expand(CFG, {"launch.volume": "file:///vol/runs", "launch.name": "base"},
                     ["learning_rate=1e-4,2e-4", "lora_r=8,16"])
    assert [m.name for m in members] == ["lr1e-4_r8", "lr1e-4_r16", "lr2e-4_r8", "lr2e-4_r16"]
    last = members[-1].overrides
    assert last["learning_rate"] == "2e-4" and last["lora_r"] == 16  # typed later by the schema, as --key value
    assert last["output_dir"] == "outputs/tiny-alpaca/lr2e-4_r16"
    assert last["launch.volume"] == "file:///vol/runs/lr2e-4_r16" and last["launch.name"] == "base-lr2e-4_r16"
    assert "launch.volume" not in expand(CFG, {}, ["seed=1,2"])[0].overrides  # no volume: none invented


def test_axis_parsing_keeps_lists_whole_and_names_are_folder_safe() -> None:
    (axis,) = parse_axes(["lora_target_modules=[q_proj,v_proj],[o_proj]"])
    assert axis.texts == ("[q_proj,v_proj]", "[o_proj]")
    assert member_name({"lora_target_modules": "[q_proj,v_proj]", "datasets.0.path": "a/b"}) == \
        "lora_target_modulesq-proj-v-proj_patha-b"  # "_" only between keys


@pytest.mark.parametrize(("spec", "message"), [
    ("learning_rate", "expected KEY=V1,V2"),
    ("launch.gpus=1,2", "cannot vary launch.gpus"),
    ("output_dir=a,b", "cannot vary output_dir"),
    ("lora_r=8,,16", "empty value"),
    ("lora_r=8,8", "listed twice"),
])
def test_malformed_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_axes([spec])


@pytest.mark.parametrize(("sweep", "expected"), [
    ("lerning_rate=1e-4,2e-4", "--sweep lerning_rate=1e-4: --lerning_rate"),
    ("lora_r=8,eight", "--sweep lora_r=eight: --lora_r"),
])
def test_bad_key_or_value_is_one_line_and_nothing_is_submitted(project: Path, sweep: str, expected: str) -> None:
    err = one_line_error(mp("launch", CFG, "--backend", "slurm", "--sweep", sweep))
    assert expected in err, err
    assert not (project / "state" / "runs.sqlite").exists()
    assert not (project / "state" / "bundles").exists()  # failed before the first bundle was built


def test_slurm_dry_run_is_one_throttled_array_over_each_members_own_script(project: Path) -> None:
    proc = mp("launch", CFG, "--backend", "slurm", "--launch.slurm.workdir", "/shared/mp", "--dry-run",
              "--sweep", "learning_rate=1e-4,2e-4", "--sweep", "lora_r=8,16",
              "--launch.slurm.array_throttle", "3")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("#SBATCH --array=") == 1 and "#SBATCH --array=0-3%3" in out
    assert "#SBATCH --output=/shared/mp/logs/slurm-%A_%a.out" in out
    assert out.count("# ---- member ") == 4 and out.count("#!/bin/bash") == 5
    run_ids = [line.split()[4] for line in out.splitlines() if line.startswith("#   ")]
    assert f"runs=({' '.join(run_ids)})" in out  # task I runs member I
    assert not (project / "state" / "runs.sqlite").exists()
    again = mp("launch", CFG, "--backend", "slurm", "--launch.slurm.workdir", "/shared/mp", "--dry-run",
               "--sweep", "learning_rate=1e-4,2e-4", "--max-parallel", "1", "--launch.slurm.array_throttle", "3")
    assert "#SBATCH --array=0-1%1" in again.stdout  # --max-parallel wins over the config


def test_each_member_bundle_carries_its_own_value_and_folder(project: Path) -> None:
    from mudpuppy.launcher.sweep_launch import prepare_group

    group = prepare_group(CFG, {"launch.backend": "ray"}, ["learning_rate=1e-4,3e-4"])
    configs = []
    for prep in group.prepared:
        with tarfile.open(prep.bundle.path) as tar:
            member = tar.extractfile("config.yml")
            assert member is not None
            configs.append(yaml.safe_load(member.read()))
    assert [c["learning_rate"] for c in configs] == [1e-4, 3e-4]
    assert [c["output_dir"] for c in configs] == ["outputs/tiny-alpaca/lr1e-4", "outputs/tiny-alpaca/lr3e-4"]
    assert len({p.bundle.digest for p in group.prepared}) == 2 and len({p.plan.run_id for p in group.prepared}) == 2


def test_metrics_summary_and_best_first() -> None:
    lines = [json.dumps({"step": 1, "loss": 2.0, "learning_rate": 0.0}),
             json.dumps({"step": 2, "loss": 1.5, "learning_rate": 3e-4}),
             json.dumps({"step": 2, "eval_loss": 1.7}), '{"step": 3, "lo']  # a line cut by a live writer
    assert summarize(lines) == {"step": 2, "loss": 1.5, "learning_rate": 3e-4, "eval_loss": 1.7}

    def result(run: str, loss: float | None, eval_loss: float | None) -> MemberResult:
        record = RunRecord(run, run, "local", None, "h", "c", "succeeded", None, 1, 0.0, 0.0, None)
        return MemberResult(record, loss=loss, eval_loss=eval_loss)

    ranked = rank([result("none", None, None), result("train-only", 0.1, None), result("eval-worse", 0.5, 2.0),
                   result("eval-best", 0.9, 1.0)])
    assert [r.record.id for r in ranked] == ["eval-best", "eval-worse", "train-only", "none"]


def test_group_lookup_by_prefix(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r.sqlite")
    for run, group in (("a", "20250101-000000-aaaa"), ("b", "20250101-000000-aaaa"), ("c", "20250102-000000-bbbb")):
        reg.create(name=run, backend="local", bundle_hash="h", config_path="c", run_id=run, group_id=group)
    assert [r.id for r in reg.group("20250101")] == ["a", "b"]
    with pytest.raises(UserError, match="ambiguous"):
        reg.group("2025")
    with pytest.raises(UserError, match="no sweep group"):
        reg.group("zzz")


def test_backends_table_says_how_each_backend_sweeps_and_cleans() -> None:
    shown = mp("backends", env={"COLUMNS": "400"}).stdout.split("after submit")[0]  # the sweeps/gc table
    slurm = [line for line in shown.splitlines() if "│ slurm" in line][-1]
    ray = [line for line in shown.splitlines() if "│ ray" in line][-1]
    assert "one job array, %N throttle" in slurm and "run folders, venvs" in slurm
    assert "one Ray job per member" in ray and "no: Ray keeps job files itself" in ray
