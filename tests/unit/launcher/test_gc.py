"""``launcher.gc`` decisions on real folders (an SSH workdir reached through a local shell, the state dir) and the
SkyPilot teardown through the real driver in SkyPilot's environment with only ``sky.down`` replaced. The SLURM
end-to-end case is tests/integration/test_gc.py."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mudpuppy.backends.transport import LocalTransport
from mudpuppy.launcher import gc
from mudpuppy.launcher.registry import Registry

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]
A, B, C = "a" * 16 + "0" * 48, "b" * 16 + "0" * 48, "c" * 16 + "0" * 48


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("MUDPUPPY_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(gc, "_transport", lambda place: LocalTransport())  # the "host" is this machine's shell
    return Registry()


def _run(reg: Registry, run: str, backend: str, digest: str, status: str, launch: dict[str, Any],
         output: str | None = None, handle: str | None = None) -> None:
    reg.create(name=run, backend=backend, bundle_hash=digest, config_path="c", run_id=run, launch=json.dumps(launch))
    reg.update(run, status=status, output=output, handle=handle or f"{backend}://h/{run}")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def test_ssh_workdir_outputs_inside_a_run_folder_stay(registry: Registry, tmp_path: Path) -> None:
    work = tmp_path / "remote"
    host = "me@gpu1:2222"  # a port in the host: the output column reads "me@gpu1:2222:/path"
    ssh = {"ssh": {"hosts": [host], "workdir": str(work)}, "nodes": 1}
    # r1 finished and wrote its outputs into its run folder (no shared filesystem): the folder stays
    _run(registry, "r1", "ssh", A, "succeeded", ssh, output=f"{host}:{work}/runs/r1/node0/outputs/x")
    # r2 finished with outputs elsewhere: its folder, bundle and unpacked wheel go
    _run(registry, "r2", "ssh", B, "failed", ssh, output=f"{host}:{tmp_path}/out2")
    # r3 is still running and shares nothing with them
    _run(registry, "r3", "ssh", C, "running", ssh, output=f"{host}:{tmp_path}/out3")
    files = {name: _touch(work / name) for name in (
        "runs/r1/node0/outputs/x/adapter_model.safetensors", "runs/r2/node0/log", "runs/r3/node0/checkpoint-4/w",
        "bundles/" + A[:16] + ".tar.gz", "bundles/" + B[:16] + ".tar.gz", "bundles/" + C[:16] + ".tar.gz",
        "wheels/" + B[:16] + "/m.whl", "wheels/" + C[:16] + "/m.whl", "runs/someone-elses/x")}
    found = gc.collect(registry)
    listed = {item.path for item in found.items}
    assert listed == {f"{work}/runs/r2", f"{work}/bundles/{A[:16]}.tar.gz", f"{work}/bundles/{B[:16]}.tar.gz",
                      f"{work}/wheels/{B[:16]}"}, found
    assert any("kept" in note and "runs/r1" in note for note in found.notes), found.notes
    assert all(item.where == host and item.backend == "ssh" for item in found.items)
    assert [problem for _item, problem in gc.remove(found.items)] == [None] * 4
    for name, path in files.items():
        assert path.exists() == (name.split("/")[1] not in ("r2", A[:16] + ".tar.gz", B[:16] + ".tar.gz", B[:16]))


def test_local_bundles_by_registry_use_and_age(registry: Registry, tmp_path: Path) -> None:
    store = tmp_path / "state" / "bundles"
    _run(registry, "fin", "local", A, "succeeded", {})
    _run(registry, "fin2", "local", B, "cancelled", {})
    _run(registry, "live", "local", B, "pending", {})  # shares fin2's bundle: it stays
    paths = {n: _touch(store / f"{n}.tar.gz") for n in (A[:16], B[:16], "d" * 16, "e" * 16)}
    _touch(store / A[:16] / "config.yml")  # the extracted copy
    old = paths["e" * 16].stat().st_mtime - 2 * gc.UNREFERENCED_AGE_S
    os.utime(paths["e" * 16], (old, old))
    listed = {Path(item.path).name: item.why for item in gc.collect(registry).items}
    assert set(listed) == {f"{A[:16]}.tar.gz", A[:16], f"{'e' * 16}.tar.gz"}, listed
    assert "fin" in listed[f"{A[:16]}.tar.gz"] and "no run" in listed[f"{'e' * 16}.tar.gz"]


def test_only_clusters_made_for_finished_unmanaged_runs_are_torn_down(registry: Registry) -> None:
    _run(registry, "r1", "skypilot", A, "succeeded", {}, handle="skypilot://mudpuppy-r1/3")
    _run(registry, "r2", "skypilot", A, "failed", {}, handle="skypilot://dev-box/1")  # the user's own cluster
    _run(registry, "r3", "skypilot", A, "succeeded", {}, handle="skypilot://managed/7")  # the controller's
    _run(registry, "r4", "skypilot", A, "running", {}, handle="skypilot://mudpuppy-r4/1")
    items = [i for i in gc.collect(registry).items if i.kind == "cluster"]
    assert [(i.path, i.action) for i in items] == [("mudpuppy-r1", "sky down mudpuppy-r1")]


_DOWN = textwrap.dedent("""
    import io, json, runpy, sys
    import sky, sky.exceptions
    calls = []
    def down(cluster, **kw):
        calls.append(["down", cluster])
        if cluster == "gone":
            raise sky.exceptions.ClusterDoesNotExist(cluster)
        return "r2"
    sky.down = down
    sky.get = lambda req: calls.append(["get", req])
    sys.argv, sys.stdin, out = [sys.argv[1], "down"], io.StringIO(sys.stdin.read()), sys.stdout
    sys.stdout = io.StringIO()
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit:
        pass
    out.write(json.dumps({"calls": calls, "result": sys.stdout.getvalue().strip().splitlines()[-1]}) + "\\n")
""")


@pytest.mark.parametrize(("cluster", "gone"), [("mudpuppy-r1", False), ("gone", True)])
def test_teardown_reaches_skypilots_down_through_the_driver(registry: Registry, monkeypatch: pytest.MonkeyPatch,
                                                            cluster: str, gone: bool) -> None:
    sky = os.environ.get("MUDPUPPY_SKYPILOT_PYTHON") or str(ROOT / ".venv-sky" / "bin" / "python")
    if not Path(sky).exists():
        if os.environ.get("MUDPUPPY_REQUIRE_EXTRAS"):
            pytest.fail(f"no SkyPilot environment at {sky}: run `make sky-venv`")
        pytest.skip(f"no SkyPilot environment at {sky} (make sky-venv)")
    import mudpuppy.backends.skypilot as skypilot

    seen: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(skypilot, "call_driver", lambda python, command, payload, **kw: seen.append(
        (command, payload)) or {})
    monkeypatch.setenv("MUDPUPPY_SKYPILOT_PYTHON", sky)
    item = gc.Item("cluster", "skypilot", cluster, "made for run r1", backend="skypilot", launch="{}")
    assert [problem for _i, problem in gc.remove([item])] == [None]
    command, payload = seen[0]
    proc = subprocess.run([sky, "-c", _DOWN, str(skypilot.DRIVER)], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=120, check=False)
    assert command == "down" and proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["calls"][0] == ["down", cluster]
    assert json.loads(answer["result"]) == {"down": cluster, "gone": gone}


def test_output_locations_split_at_the_path() -> None:
    from mudpuppy.launcher.locations import split_output

    assert split_output("me@gpu1:2222,gpu2:/w/runs/R/node0/out/") == ("me@gpu1:2222,gpu2", "/w/runs/R/node0/out")
    assert split_output("local:~/.mudpuppy/x") == ("local", "~/.mudpuppy/x")
    assert split_output("/storage/R (final outputs: the last checkpoint, final-*)") is None  # Ray's note
    assert split_output("s3://b/runs/R") is None and split_output(None) is None


def test_a_failed_runs_bundle_stays_while_resume_could_still_use_it(registry: Registry, tmp_path: Path) -> None:
    """`mudpuppy resume` resubmits a failed or cancelled run's stored bundle: gc keeps it until another attempt
    continued the run (its bundle is then the child's to keep) or the run is RESUMABLE_DAYS old."""
    store = tmp_path / "state" / "bundles"
    _run(registry, "failed", "local", A, "failed", {})
    _run(registry, "cancelled", "local", B, "cancelled", {})
    registry.create(name="cancelled", backend="local", bundle_hash=C, config_path="c", run_id="continued",
                    parent_id="cancelled")
    registry.update("continued", status="succeeded")
    for digest in (A, B, C):
        _touch(store / f"{digest[:16]}.tar.gz")
    found = gc.collect(registry)
    listed = {Path(item.path).name for item in found.items}
    assert listed == {f"{B[:16]}.tar.gz", f"{C[:16]}.tar.gz"}, found
    assert any("mudpuppy resume failed" in note for note in found.notes), found.notes
    with registry._connect() as db:  # the failed run last changed long ago: nothing will resume it any more
        db.execute("UPDATE runs SET updated = updated - ? WHERE id = 'failed'", ((gc.RESUMABLE_DAYS + 1) * 86400,))
    assert f"{A[:16]}.tar.gz" in {Path(item.path).name for item in gc.collect(registry).items}
