"""The skypilot backend: golden task YAML for a matrix of options, every rendering parsed and round-tripped by
SkyPilot itself, submission exercised against SkyPilot's API objects with the cloud calls replaced, and the
errors a user hits before anything is created. ``launch --dry-run`` needs no SkyPilot at all.

SkyPilot lives in its own environment (its ``click<8.2`` pin conflicts with huggingface-hub): these tests run
it through ``$MUDPUPPY_SKYPILOT_PYTHON`` or ``.venv-sky/bin/python`` (``make test`` builds it). Regenerate the
golden files after an intended change with ``MUDPUPPY_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from mudpuppy.backends.base import Handle, State
from mudpuppy.backends.skypilot import (
    AUTODOWN_MINUTES,
    CLOUDS,
    DRIVER,
    SkyPilotBackend,
    call_driver,
    map_state,
    render_task,
    sky_python,
    to_yaml,
)
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.errors import UserError

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).parent / "golden"
DIGEST = "0123456789abcdef" * 4
IMAGE = {"schema": 1, "base_image": "python:3.11-slim", "python": "3.11",
         "packages": ["torch==2.13.0", "transformers==5.24.0"], "wheel": "wheels/mudpuppy-0.1.0-py3-none-any.whl",
         "env": {}, "secrets": []}

MATRIX: dict[str, dict[str, Any]] = {
    "cpu_on_demand": {},
    "h100x8_spot_managed_two_nodes": {
        "gpus": "H100:8", "nodes": 2, "spot": True, "retries": 5, "name": "llama-sft",
        "secrets": ["HF_TOKEN", "WANDB_API_KEY"], "env": {"NCCL_DEBUG": "INFO"},
        "skypilot": {"cloud": "aws", "region": "us-east-1", "disk_size": 512, "bucket": "s3://ckpt-bucket/mudpuppy"},
    },
    "spot_no_fallback_gcs_volume": {
        "gpus": "A100-80GB:4", "spot": True, "volume": "gs://team-bucket/runs", "cpus": 32, "memory": "256G",
        "skypilot": {"cloud": "gcp", "spot_fallback": False, "recovery_strategy": "FAILOVER",
                     "max_restarts_on_errors": 1, "image_id": "docker:nvcr.io/nvidia/pytorch:25.01-py3"},
    },
    "user_container": {"gpus": "A100:1", "image": "nvcr.io/nvidia/pytorch:25.01-py3"},
    "unmanaged_named_cluster": {
        "gpus": "L4:1", "skypilot": {"cluster": "dev-box", "zone": "us-central1-a", "idle_minutes_to_autostop": 30,
                                     "master_port": 29600},
    },
}


def launch(case: str) -> LaunchSection:
    return LaunchSection.model_validate({"backend": "skypilot", **MATRIX[case]})


def rendered(case: str) -> dict[str, Any]:
    return render_task(launch(case), "20250101-000000-abcd", None, bundle_name="0123456789abcdef.tar.gz",
                       bundle_path="/home/me/.local/state/mudpuppy/bundles/0123456789abcdef.tar.gz", image=IMAGE,
                       bundle_digest=DIGEST)


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_task_yaml_golden(case: str) -> None:
    text = to_yaml(rendered(case))
    golden = GOLDEN / f"skypilot_{case}.yaml"
    if os.environ.get("MUDPUPPY_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert yaml.safe_load(text) == rendered(case)
    for script in ("setup", "run"):
        assert subprocess.run(["bash", "-n", "-c", rendered(case)[script]], check=False).returncode == 0


def test_render_facts() -> None:
    task = rendered("h100x8_spot_managed_two_nodes")
    res = task["resources"]
    assert res["any_of"] == [{"use_spot": True}, {"use_spot": False}]
    # SkyPilot re-runs any non-75 failure max_restarts_on_errors times (exit 2 too): the run script decides instead
    assert res["job_recovery"] == {"strategy": "EAGER_NEXT_REGION", "max_restarts_on_errors": 0,
                                   "recover_on_exit_codes": [75]}
    assert task["num_nodes"] == 2 and res["accelerators"] == "H100:8"
    assert "/checkpoints" not in task["file_mounts"]  # no MOUNT_CACHED: the runtime's volume sync orders the writes
    assert task["envs"]["MUDPUPPY_VOLUME"] == "s3://ckpt-bucket/mudpuppy/runs/20250101-000000-abcd"
    assert task["secrets"] == {"HF_TOKEN": None, "WANDB_API_KEY": None}
    assert "--node-rank=env:SKYPILOT_NODE_RANK" in task["run"] and "SKYPILOT_NODE_IPS" in task["run"]
    assert "--nproc-per-node=8" in task["run"] and "--nnodes=2" in task["run"]
    assert "job_recovery" not in rendered("unmanaged_named_cluster")["resources"]
    assert rendered("spot_no_fallback_gcs_volume")["envs"]["MUDPUPPY_VOLUME"] == "gs://team-bucket/runs"
    container = rendered("user_container")
    assert container["resources"]["image_id"] == "docker:nvcr.io/nvidia/pytorch:25.01-py3"
    assert "--system-site-packages" in container["setup"] and "torch==" not in container["setup"]


def _render(options: dict[str, Any]) -> dict[str, Any]:
    return render_task(LaunchSection.model_validate({"backend": "skypilot", **options}), "r1", None,
                       bundle_name="b", bundle_path="/b", image=IMAGE, bundle_digest=DIGEST)


@pytest.mark.parametrize("options", [{"spot": True}, {"skypilot": {"managed": True}},
                                     {"spot": True, "volume": "file:///shared/runs"}])
def test_managed_without_a_bucket_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="restart from step 0") as err:
        _render(options)
    assert "launch.skypilot.bucket" in (err.value.hint or "")


@pytest.mark.parametrize("store", ["r2://b/p", "https://host/b", "s3://"])
def test_bucket_the_runtime_cannot_sync_to_is_refused(store: str) -> None:
    with pytest.raises(UserError, match="s3:// or gs://"):
        _render({"spot": True, "skypilot": {"bucket": store}})


def test_image_carries_the_bucket_filesystem(tmp_path: Path) -> None:
    """The node's venv gets s3fs/gcsfs when checkpoints go to such a bucket (the volume sync needs it)."""
    from mudpuppy.launcher.config.loader import load_config
    from mudpuppy.launcher.image import image_spec
    from tests.infra.tiny_bundle import tiny_config

    def packages(launch: dict[str, Any]) -> set[str]:
        config = load_config(tiny_config(tmp_path, launch)).config
        return {p.split("==")[0].lower() for p in image_spec(config, wheel=None)["packages"]}

    assert "s3fs" in packages({"backend": "skypilot", "spot": True, "skypilot": {"bucket": "s3://b/p"}})
    assert "gcsfs" in packages({"backend": "skypilot", "volume": "gs://b/p"})
    assert not {"s3fs", "gcsfs"} & packages({"backend": "skypilot"})


def test_unknown_cloud_and_untyped_gpus_fail_in_plan() -> None:
    with pytest.raises(UserError, match="'awz' is not a SkyPilot cloud"):
        render_task(LaunchSection.model_validate({"skypilot": {"cloud": "awz"}}), "r", None, bundle_name="b",
                    bundle_path="/b", image=IMAGE, bundle_digest=DIGEST)
    with pytest.raises(UserError, match="needs the GPU type"):
        render_task(LaunchSection.model_validate({"gpus": "4"}), "r", None, bundle_name="b", bundle_path="/b",
                    image=IMAGE, bundle_digest=DIGEST)


def test_state_mapping() -> None:
    assert map_state("ManagedJobStatus.RECOVERING") == State.PENDING
    assert map_state("FAILED_NO_RESOURCE") == State.FAILED
    assert map_state("SUCCEEDED") == State.SUCCEEDED and map_state("CANCELLED") == State.CANCELLED
    assert map_state("whatever") == State.UNKNOWN


def test_dry_run_is_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """``launch --dry-run`` prints the task without SkyPilot importable or any SkyPilot interpreter."""
    from mudpuppy.launcher import dispatch
    from mudpuppy.launcher.cli import main
    from tests.infra.tiny_bundle import tiny_config

    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MUDPUPPY_SKYPILOT_PYTHON", str(tmp_path / "nowhere" / "python"))
    monkeypatch.setattr(dispatch, "mudpuppy_wheel", lambda cache: None)
    config = tiny_config(tmp_path, {"backend": "skypilot", "gpus": "A10G:1", "spot": True,
                                    "skypilot": {"bucket": "s3://ckpt/runs"}})
    with pytest.raises(SystemExit) as done:
        main(["launch", str(config), "--dry-run"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    task = yaml.safe_load(out.split("# Generated by mudpuppy", 1)[1].split("\n", 1)[1])
    assert task["resources"]["accelerators"] == "A10G:1" and task["resources"]["job_recovery"]["recover_on_exit_codes"]


def test_missing_skypilot_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MUDPUPPY_SKYPILOT_PYTHON", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="SkyPilot is not installed"):
        sky_python(LaunchSection())


# ---------------------------------------------------------------- with SkyPilot (its own environment)


@pytest.fixture(scope="module")
def sky() -> str:
    python = os.environ.get("MUDPUPPY_SKYPILOT_PYTHON") or str(ROOT / ".venv-sky" / "bin" / "python")
    if not Path(python).exists():
        if os.environ.get("MUDPUPPY_REQUIRE_EXTRAS"):
            pytest.fail(f"no SkyPilot environment at {python}: run `make sky-venv`")
        pytest.skip(f"no SkyPilot environment at {python} (make sky-venv)")
    return python


def test_every_rendered_task_parses_and_round_trips(sky: str) -> None:
    cases = sorted(MATRIX)
    texts = [to_yaml(rendered(case)) for case in cases]
    result = call_driver(sky, "validate", {"tasks": texts}, timeout=300)
    for case, checked in zip(cases, result["tasks"], strict=True):
        ours = rendered(case)
        dumped = checked["dumped"]
        assert checked["stable"], case  # dump -> parse -> dump is a fixed point
        assert checked["num_nodes"] == ours["num_nodes"]
        assert dumped["envs"] == ours["envs"] and dumped["run"] == ours["run"] and dumped["setup"] == ours["setup"]
        res = dumped["resources"]
        if "any_of" in ours["resources"]:
            assert sorted(r.get("use_spot", False) for r in res["any_of"]) == [False, True], case
        if "job_recovery" in ours["resources"]:
            recovery = res.get("job_recovery") or res["any_of"][0]["job_recovery"]
            assert recovery["recover_on_exit_codes"] == [75] and recovery["strategy"] == ours["resources"][
                "job_recovery"]["strategy"]
        if "/checkpoints" in ours["file_mounts"]:
            assert dumped["file_mounts"]["/checkpoints"]["mode"] == "MOUNT_CACHED"


# Runs the driver's ``launch`` in SkyPilot's environment with only the cloud replaced: what ``sky.launch`` /
# ``sky.jobs.launch`` receive is serialised the way SkyPilot's client sends it to the API server, parsed back the
# way the server does, and handed to SkyPilot's own ``execution.launch`` (admin policy, volumes, storage, managed
# secret resolution) up to ``_execute_dag``, where a cloud would be needed.
_HARNESS = textwrap.dedent("""
    import io, json, os, runpy, sys
    import sky, sky.jobs
    from sky import execution
    from sky.client import sdk
    from sky.task import get_plaintext_secrets
    from sky.utils import dag_utils, registry
    ENABLED, CLOUDS = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    unknown = [c for c in CLOUDS if c not in registry.CLOUD_REGISTRY]
    calls = []
    sdk.enabled_clouds = lambda *a, **k: "req-enabled"
    sky.get = lambda req: ENABLED if req == "req-enabled" else None
    def server_side(fn, task, **kw):
        wire = dag_utils.dump_dag_to_yaml_str(dag_utils.convert_entrypoint_to_dag(task))
        dag = dag_utils.load_dag_from_yaml_str(wire)
        seen = {}
        execution._execute_dag = lambda dag, **k: seen.update(task=dag.tasks[0], kw=k) or (1, None)
        try:
            execution.launch(dag, **kw)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        ran = seen.get("task")
        calls.append({"fn": fn, "kw": kw, "task": task.to_yaml_config(), "error": error,
                      "shown": json.dumps(task.to_yaml_config(use_user_specified_yaml=True)),
                      "secret_values": get_plaintext_secrets(ran.secrets) if ran else None,
                      "managed_refs": [r.name for r in ran.managed_secret_refs] if ran else None,
                      "cluster_name": seen["kw"].get("cluster_name") if ran else None,
                      "autostop": sorted({(r.autostop_config.idle_minutes, r.autostop_config.down)
                                          for r in ran.resources if r.autostop_config} if ran else [])})
    def jobs_launch(task, name=None, **kw):
        server_side("jobs.launch", task, _is_launched_by_jobs_controller=True)
        calls[-1]["name"] = name
        return "req-jobs"
    def launch(task, cluster_name=None, **kw):
        server_side("launch", task, cluster_name=cluster_name, down=kw.get("down", False),
                    idle_minutes_to_autostop=kw.get("idle_minutes_to_autostop"))
        calls[-1]["cluster"] = cluster_name
        return "req-launch"
    sky.jobs.launch, sky.launch = jobs_launch, launch
    def stream_and_get(req, **kw):
        if os.environ.get("FAKE_LAUNCH_FAILS"):
            raise RuntimeError("Failed to provision all possible launchable resources")
        return ([7], None) if req == "req-jobs" else (3, None)
    sky.stream_and_get = stream_and_get
    def down(cluster, **kw):
        calls.append({"fn": "down", "cluster": cluster})
        return "req-down"
    sky.down = down
    sys.argv, sys.stdin, out = [sys.argv[3], "launch"], io.StringIO(sys.stdin.read()), sys.stdout
    sys.stdout = io.StringIO()
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    out.write(json.dumps({"code": code, "stdout": sys.stdout.getvalue(), "calls": calls, "unknown": unknown},
                         default=str) + "\\n")
""")


# The one file SkyPilot's validation reads from the network (its GPU-name catalog, fetched from GitHub on first
# use): a local copy with the names these tests use, in a HOME of its own (SkyPilot keeps its state under ~/.sky).
_CATALOG = "AcceleratorName,Clouds\nA100-80GB,AWS GCP Azure\nA10G,AWS\nH100,AWS GCP Azure\nL4,AWS GCP\n"


@pytest.fixture(scope="module")
def sky_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    home = tmp_path_factory.mktemp("sky-home")
    catalog = home / ".sky" / "catalogs" / "v8" / "common"
    catalog.mkdir(parents=True)
    (catalog / "accelerators.csv").write_text(_CATALOG)
    (catalog / "metadata.csv").write_text("GPU,MemoryGB,Manufacturer\nH100,80,NVIDIA\n")
    return str(home)


def _submit_with_fake_cloud(sky: str, plan: Any, enabled: list[str], env: dict[str, str],
                            home: str | None = None) -> dict[str, Any]:
    payload = {"task": plan.extra["task"], "managed": plan.extra["managed"], "cluster": plan.extra["cluster"],
               "idle_minutes_to_autostop": plan.extra["idle_minutes_to_autostop"], "secrets": list(plan.secrets),
               "down_on_failure": plan.extra["cluster"].startswith("mudpuppy-")}
    proc = subprocess.run([sky, "-c", _HARNESS, json.dumps(enabled), json.dumps(list(CLOUDS)), str(DRIVER)],
                          input=json.dumps(payload), capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env, **({"HOME": home} if home else {})}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _plan(case: str | dict[str, Any], tmp_path: Path) -> Any:
    from tests.infra.tiny_bundle import tiny_bundle

    _config, bundle = tiny_bundle(tmp_path)
    section = launch(case) if isinstance(case, str) else LaunchSection.model_validate({"backend": "skypilot", **case})
    return SkyPilotBackend(section).plan(bundle, "20250101-000000-abcd")


# The managed case without a pinned cloud region: validating a region needs that cloud's whole VM catalog.
MANAGED_ANY_CLOUD = {k: v for k, v in MATRIX["h100x8_spot_managed_two_nodes"].items() if k != "skypilot"} | {
    "skypilot": {"bucket": "s3://ckpt-bucket/mudpuppy"}}


def test_managed_launch_reaches_skypilot_with_secrets_and_recovery(sky: str, sky_home: str, tmp_path: Path) -> None:
    plan = _plan(MANAGED_ANY_CLOUD, tmp_path)
    env = {"HF_TOKEN": "hf_secret_value", "WANDB_API_KEY": "wandb_value"}
    got = _submit_with_fake_cloud(sky, plan, ["aws", "gcp"], env, sky_home)
    assert got["unknown"] == []  # every cloud name we accept is one SkyPilot knows
    assert got["code"] == 0 and json.loads(got["stdout"].strip().splitlines()[-1]) == {"job_id": 7}
    [call] = got["calls"]
    assert call["fn"] == "jobs.launch" and call["name"] == "llama-sft-20250101-000000-abcd"
    # SkyPilot's execution resolved the secrets as inline values, not managed-secret references
    assert call["error"] is None, call["error"]
    assert call["managed_refs"] == [] and call["secret_values"] == env
    # values exist only in SkyPilot's process: not in what SkyPilot shows/stores, the plan, or the dry run
    for text in (call["shown"], plan.script, json.dumps(plan.extra), json.dumps(plan.env)):
        assert "hf_secret_value" not in text and "wandb_value" not in text
    assert call["task"]["num_nodes"] == 2
    # and the backend turns the result into a handle
    handle = Handle("skypilot", plan.session, "7")
    assert str(handle) == "skypilot://managed/7"


def test_update_secrets_alone_leaves_a_managed_reference(sky: str) -> None:
    """Why the driver passes values as ``secrets_overrides``: a ``NAME: null`` task plus ``update_secrets`` still
    fails in SkyPilot's execution. If SkyPilot changes this, the driver's workaround can be revisited."""
    code = textwrap.dedent("""
        import sky
        from sky import execution
        from sky.utils import dag_utils
        task = sky.Task.from_yaml_config({"run": "true", "secrets": {"HF_TOKEN": None}})
        task.update_secrets({"HF_TOKEN": "v"})
        try:
            execution._resolve_managed_secrets(dag_utils.convert_entrypoint_to_dag(task))
        except RuntimeError as exc:
            print(str(exc).splitlines()[0])
    """)
    proc = subprocess.run([sky, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert "No value available for secret(s): HF_TOKEN" in proc.stdout, proc.stderr[-2000:]


def test_unmanaged_launch_uses_the_named_cluster(sky: str, sky_home: str, tmp_path: Path) -> None:
    plan = _plan("unmanaged_named_cluster", tmp_path)
    got = _submit_with_fake_cloud(sky, plan, ["gcp"], {}, sky_home)
    [call] = got["calls"]
    assert call["fn"] == "launch" and call["cluster"] == "dev-box"
    assert call["kw"]["idle_minutes_to_autostop"] == 30 and call["kw"]["down"] is True


def test_unmanaged_cluster_autodowns_by_default(sky: str, sky_home: str, tmp_path: Path) -> None:
    """No unmanaged cluster outlives its run unless asked: SkyPilot's execution gets autodown after the default
    idle time, and the secret reaches it as a value."""
    plan = _plan({"gpus": "L4:1", "secrets": ["HF_TOKEN"]}, tmp_path)
    got = _submit_with_fake_cloud(sky, plan, ["gcp"], {"HF_TOKEN": "hf_v"}, sky_home)
    [call] = got["calls"]
    assert call["error"] is None, call["error"]
    assert call["cluster_name"] == "mudpuppy-20250101-000000-abcd"
    assert call["autostop"] == [[AUTODOWN_MINUTES, True]]  # (idle minutes, down) on what SkyPilot provisions
    assert call["secret_values"] == {"HF_TOKEN": "hf_v"} and call["managed_refs"] == []
    assert "hf_v" not in call["shown"]


@pytest.mark.parametrize(("options", "torn_down"), [({"gpus": "L4:1"}, True),
                                                   ({"gpus": "L4:1", "skypilot": {"cluster": "dev-box"}}, False)])
def test_failed_provisioning_tears_down_a_cluster_made_for_the_run(sky: str, sky_home: str, tmp_path: Path,
                                                                  options: dict[str, Any], torn_down: bool) -> None:
    plan = _plan(options, tmp_path)
    got = _submit_with_fake_cloud(sky, plan, ["gcp"], {"FAKE_LAUNCH_FAILS": "1"}, sky_home)
    downs = [c["cluster"] for c in got["calls"] if c["fn"] == "down"]
    if torn_down:
        assert downs == ["mudpuppy-20250101-000000-abcd"] and got["code"] == 3
        assert "was torn down: Failed to provision" in json.loads(got["stdout"].strip().splitlines()[-1])["error"]
    else:
        assert downs == [] and got["code"] == 3  # the user's own cluster stays
        assert "launch failed: Failed to provision" in json.loads(got["stdout"].strip().splitlines()[-1])["error"]


@pytest.mark.parametrize(("enabled", "message"), [
    ([], "no cloud has credentials set up"),
    (["gcp"], "cloud aws has no credentials here"),
])
def test_missing_credentials_fail_before_launch(sky: str, tmp_path: Path, enabled: list[str], message: str) -> None:
    plan = _plan("h100x8_spot_managed_two_nodes", tmp_path)
    got = _submit_with_fake_cloud(sky, plan, enabled, {"HF_TOKEN": "x", "WANDB_API_KEY": "y"})
    assert got["code"] == 3 and got["calls"] == []
    result = json.loads(got["stdout"].strip().splitlines()[-1])
    assert message in result["error"] and result["hint"].startswith("run `sky check")


def test_driver_errors_become_one_line_user_errors(sky: str) -> None:
    with pytest.raises(UserError, match="SkyPilot rejected the task"):
        call_driver(sky, "validate", {"tasks": ["resources:\n  accelerators: 7\n  use_spot: maybe\n"]}, timeout=300)


# SkyPilot's own recovery decision (StrategyExecutor.should_restart_on_failure, built by StrategyExecutor.make from
# the task's job_recovery) applied to the exit code of the rendered run script, attempt after attempt. The node
# command is a stand-in python that exits with the next code of a list; "preempt" is a VM lost mid-run, which
# SkyPilot recovers without asking the job. The attempt counter lives on a file:// volume.
_RECOVERY = textwrap.dedent("""
    import asyncio, json, os, subprocess, sys
    import sky
    from sky import backends
    from sky.jobs import recovery_strategy
    task_config, cases = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    results = []
    for case in cases:
        codes, home, volume = case["codes"], case["home"], case["volume"]
        task = sky.Task.from_yaml_config(json.loads(sys.argv[1]))  # it pops keys from the dict it is given
        executor = recovery_strategy.StrategyExecutor.make(
            "c", backends.CloudVmRayBackend(), task, 1, 0, None, set(), asyncio.Lock(), asyncio.Condition())
        env = {**os.environ, **task_config["envs"], "HOME": home, "MUDPUPPY_VOLUME": volume,
               "SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "127.0.0.1", "SKYPILOT_NUM_NODES": "1"}
        starts, exits, outcome = 0, [], None
        for _ in range(20):
            proc = subprocess.run(["bash", "-c", task_config["run"]], env=env, capture_output=True, text=True)
            ran = int(open(os.path.join(home, "ran")).read()) if os.path.exists(os.path.join(home, "ran")) else 0
            if ran > starts:
                starts = ran
                if codes[ran - 1] == "preempt":
                    continue  # the VM vanished: SkyPilot recovers it whatever the job would have said
            exits.append(proc.returncode)
            if proc.returncode == 0:
                outcome = "SUCCEEDED"
                break
            if not executor.should_restart_on_failure(exit_codes=[proc.returncode]):
                outcome = "FAILED"
                break
        results.append({"outcome": outcome, "node_runs": starts, "exits": exits})
    print(json.dumps(results))
""")

_FAKE_NODE = """#!/bin/bash
if [ "$1" = "-c" ]; then exec {python} "$@"; fi
n=$(( $(cat "$HOME/ran" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$HOME/ran"
code=$({python} -c 'import json, sys; c = json.loads(sys.argv[1])[int(sys.argv[2]) - 1]; \\
print(0 if c == "preempt" else c)' '{codes}' "$n")
exit "$code"
"""


RECOVERY_CASES: list[tuple[list[Any], str, int, list[int]]] = [
    # node exit codes per attempt -> outcome, node runs, exit codes SkyPilot saw (launch.retries = 2)
    ([2, 0], "FAILED", 1, [2]),                     # a user error is never retried
    ([1, 0], "SUCCEEDED", 2, [75, 0]),              # a crash is retried
    ([75, 75, 75, 75], "FAILED", 3, [75, 75, 1]),   # three attempts, then failed
    ([1, 75, 139, 0], "FAILED", 3, [75, 75, 139]),  # crashes and preemptions share the budget
    (["preempt", "preempt", "preempt", 0], "FAILED", 3, [1]),  # lost VMs count too (the 4th start refuses)
]


@pytest.mark.timeout(300)
def test_retry_budget_through_skypilot_recovery(sky: str, tmp_path: Path) -> None:
    import sys

    task = _render({"spot": True, "retries": 2, "skypilot": {"bucket": "s3://ckpt/runs"}})
    cases = []
    for n, (codes, *_expected) in enumerate(RECOVERY_CASES):
        home = tmp_path / f"home{n}"
        fake = home / "mudpuppy" / "venvs" / DIGEST[:16] / "bin" / "python"
        fake.parent.mkdir(parents=True)
        fake.write_text(_FAKE_NODE.format(python=sys.executable, codes=json.dumps(codes)))
        fake.chmod(0o755)
        cases.append({"codes": codes, "home": str(home), "volume": f"file://{tmp_path / f'volume{n}'}"})
    proc = subprocess.run([sky, "-c", _RECOVERY, json.dumps(task), json.dumps(cases)], capture_output=True,
                          text=True, timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == [{"outcome": o, "node_runs": r, "exits": e} for _c, o, r, e in RECOVERY_CASES]


def test_every_skypilot_job_state_is_mapped(sky: str) -> None:
    """Each managed-job and cluster-job status SkyPilot can report (WINDING_DOWN included) maps to one of ours."""
    code = ("import json; from sky.jobs.state import ManagedJobStatus; from sky.skylet.job_lib import JobStatus; "
            "print(json.dumps([s.value for s in ManagedJobStatus] + [s.value for s in JobStatus]))")
    proc = subprocess.run([sky, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "WINDING_DOWN" in names
    assert [n for n in names if map_state(n) == State.UNKNOWN] == []


_CANCEL = textwrap.dedent("""
    import io, json, runpy, sys
    import sky, sky.jobs
    calls = []
    sky.cancel = lambda cluster, job_ids=None, **kw: calls.append(["cancel", cluster, job_ids]) or "r1"
    sky.down = lambda cluster, **kw: calls.append(["down", cluster]) or "r2"
    sky.jobs.cancel = lambda job_ids=None, **kw: calls.append(["jobs.cancel", job_ids]) or "r3"
    sky.get = lambda req: calls.append(["get", req])
    sys.argv, sys.stdin, out = [sys.argv[1], "cancel"], io.StringIO(sys.stdin.read()), sys.stdout
    sys.stdout = io.StringIO()
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit:
        pass
    out.write(json.dumps(calls) + "\\n")
""")


@pytest.mark.parametrize(("keep", "managed", "expected"), [
    (False, False, [["cancel", "mudpuppy-r1", [3]], ["get", "r1"], ["down", "mudpuppy-r1"], ["get", "r2"]]),
    (True, False, [["cancel", "mudpuppy-r1", [3]], ["get", "r1"]]),
    (False, True, [["jobs.cancel", [3]], ["get", "r3"]]),
])
def test_cancel_tears_the_cluster_down_unless_kept(sky: str, monkeypatch: pytest.MonkeyPatch, keep: bool,
                                                   managed: bool, expected: list[Any]) -> None:
    """``mudpuppy cancel`` reaches SkyPilot's cancel and down (``--keep`` skips down) through the real driver."""
    import mudpuppy.backends.skypilot as skypilot

    seen: list[dict[str, Any]] = []

    def driver(python: str, command: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
        seen.append(payload)
        return {}

    monkeypatch.setattr(skypilot, "call_driver", driver)
    monkeypatch.setenv("MUDPUPPY_SKYPILOT_PYTHON", sky)
    backend = SkyPilotBackend(LaunchSection.model_validate({"backend": "skypilot"}))
    backend.keep_resources = keep
    backend.cancel(Handle("skypilot", "managed" if managed else "mudpuppy-r1", "3"))
    proc = subprocess.run([sky, "-c", _CANCEL, str(DRIVER)], input=json.dumps(seen[0]), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_cancel_keep_flag_reaches_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from mudpuppy.launcher import dispatch
    from mudpuppy.launcher.cli.cancel_cmd import cancel
    from mudpuppy.launcher.registry import Registry

    got: list[bool] = []
    monkeypatch.setattr(Registry, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(Registry, "get", lambda self, run: run, raising=False)
    monkeypatch.setattr(dispatch, "cancel", lambda record, registry, keep=False: got.append(keep) or
                        type("R", (), {"id": record})())
    assert CliRunner().invoke(cancel, ["r1", "--keep"]).exit_code == 0
    assert CliRunner().invoke(cancel, ["r1"]).exit_code == 0
    assert got == [True, False]


def test_a_launch_past_the_wait_keeps_its_handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Provisioning that outlasts the wait leaves a handle naming SkyPilot's request, not a lost launch."""
    import mudpuppy.backends.skypilot as skypilot

    slow = tmp_path / "sky-python"
    slow.write_text('#!/bin/bash\ncat > /dev/null\necho \'{"request_id": "4f1c-launch"}\'\nexec sleep 60\n')
    slow.chmod(0o755)
    monkeypatch.setenv("MUDPUPPY_SKYPILOT_PYTHON", str(slow))
    monkeypatch.setattr(skypilot, "LAUNCH_WAIT_S", 2)
    plan = _plan("unmanaged_named_cluster", tmp_path)
    handle = SkyPilotBackend(launch("unmanaged_named_cluster")).submit(plan)
    assert handle == Handle("skypilot", "dev-box", "req-4f1c-launch")
    assert Handle.parse(str(handle)) == handle
    assert skypilot._ref(handle) == {"managed": False, "cluster": "dev-box", "request_id": "4f1c-launch",
                                     "job_id": None}


_STATUS = textwrap.dedent("""
    import io, json, runpy, sys, types
    import sky
    answers, payload, driver = [], sys.stdin.read(), sys.argv[1]
    for state in json.loads(sys.argv[2]):
        sky.api_status = lambda ids, state=state: [types.SimpleNamespace(status=state)] if state != "GONE" else []
        sky.get = lambda req: (5, None) if req == "4f1c-launch" else req
        sky.job_status = lambda cluster, job_ids: {job_ids[0]: "JobStatus.RUNNING"}
        sys.argv, sys.stdin, out = [driver, "status"], io.StringIO(payload), sys.stdout
        sys.stdout = io.StringIO()
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit:
            pass
        answers.append(json.loads(sys.stdout.getvalue().strip().splitlines()[-1]))
        sys.stdout = out
    print(json.dumps(answers))
""")


def test_status_resolves_a_launch_request(sky: str) -> None:
    cases = {"RequestStatus.RUNNING": State.PENDING, "SUCCEEDED": State.RUNNING, "FAILED": State.FAILED,
             "GONE": State.FAILED}
    payload = {"managed": False, "cluster": "dev-box", "request_id": "4f1c-launch", "job_id": None}
    proc = subprocess.run([sky, "-c", _STATUS, str(DRIVER), json.dumps(list(cases))], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [map_state(a["status"]) for a in answers] == list(cases.values()), answers


@pytest.mark.parametrize(("keys", "refused"), [
    ({"deepspeed": "deepspeed_configs/zero2.json"}, "deepspeed"),
    ({"fsdp_version": 2, "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}, "FSDP state_dict_type"),
    ({"fsdp_version": 2, "fsdp_config": {"offload_params": False}}, "unset"),
    ({"fsdp_version": 2, "fsdp_config": {"state_dict_type": "FULL_STATE_DICT"}}, None),
    ({}, None),
])
def test_multi_node_sharded_checkpoints_on_separate_disks_are_refused_at_plan_time(
        tmp_path: Path, keys: dict[str, Any], refused: str | None) -> None:
    """Rank 0 alone syncs to the bucket; shards written by the other nodes would be lost with their VMs."""
    from mudpuppy.launcher.bundle import build_bundle
    from mudpuppy.launcher.config import load_config
    from tests.infra.tiny_bundle import tiny_config

    config = load_config(tiny_config(tmp_path, **keys)).config
    bundle = build_bundle(config, tmp_path / "store")
    two_nodes = LaunchSection.model_validate({"backend": "skypilot", "gpus": "H100:8", "nodes": 2,
                                              "skypilot": {"bucket": "s3://ckpt/mudpuppy"}})
    one_node = two_nodes.model_copy(update={"nodes": 1})
    SkyPilotBackend(one_node).plan(bundle, "20250101-000000-abcd")  # a single node keeps every shard
    if refused is None:
        SkyPilotBackend(two_nodes).plan(bundle, "20250101-000000-abcd")
    else:
        with pytest.raises(UserError, match=f"launch.nodes: 2 on skypilot with .*{refused}"):
            SkyPilotBackend(two_nodes).plan(bundle, "20250101-000000-abcd")
