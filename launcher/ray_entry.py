"""The driver of a Ray job: ``python -m mudpuppy.launcher.ray_entry --spec JSON`` (``backends.ray`` submits it).

It runs Ray Train's ``TorchTrainer``; each worker runs the mudpuppy runtime in-process (Ray has already set
RANK/WORLD_SIZE/LOCAL_RANK and initialised torch.distributed). Checkpoints are the runtime's own: after each
published ``checkpoint-N`` (manifest written) every worker calls ``ray.train.report`` and rank 0 hands the folder
to Ray, which copies it to ``storage_path/RUN_ID/checkpoint-N``. When Ray restarts the worker group (a lost
worker, ``FailureConfig.max_failures``), each node first replaces its local checkpoints with exactly the one
``ray.train.get_checkpoint()`` returns, so every rank resumes from the same step. When training ends, rank 0
reports the final outputs (everything but the checkpoints) as the last checkpoint, marked ``final``.

Like ``node_entry`` this runs inside the job, not on the laptop; it imports the runtime only in the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mudpuppy.launcher.contract import ENV_WORKDIR, EXIT_OK, EXIT_USER_ERROR

FINAL_MARKER = "mudpuppy-final.json"
DEFAULT_ENTRYPOINT = "mudpuppy.runtime"
MANIFEST = "mudpuppy-manifest.json"
NODES_DIR = "nodes"  # under the run's work folder: one folder per node that does not hold rank 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mudpuppy.launcher.ray_entry")
    parser.add_argument("--spec", required=True, help="JSON written by backends.ray.job_spec")
    parser.add_argument("--secrets-file", help="file in the working_dir with secret values; deleted once read")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    if "://" not in spec["bundle"]:  # the job's cwd is its working_dir, holding the bundle
        spec["bundle"] = str(Path(spec["bundle"]).resolve())
    values = take_secrets(Path(args.secrets_file)) if args.secrets_file else {}
    if values is None:
        print(f"[mudpuppy] the secrets file {args.secrets_file} is missing: secrets are delivered once per "
              "submission; launch the run again", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    os.environ.update(values)

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.exceptions import TrainingFailedError

    from mudpuppy.launcher.ray_user_error import is_user_error, stop_on_user_error, user_error_line

    trainer = TorchTrainer(
        with_secrets(values, Path(args.secrets_file).name) if values else train_loop,
        train_loop_config=spec,
        scaling_config=ScalingConfig(
            num_workers=spec["num_workers"], use_gpu=spec["use_gpu"],
            resources_per_worker=spec["resources_per_worker"] or None,
        ),
        run_config=RunConfig(
            name=spec["run_id"], storage_path=spec["storage_path"],
            failure_config=FailureConfig(max_failures=spec["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.get("num_to_keep")),
            callbacks=[stop_on_user_error()],
        ),
        torch_config=TorchConfig(backend=spec["backend"]),
    )
    print(f"[mudpuppy] Ray Train: {spec['num_workers']} worker(s), gpu={spec['use_gpu']}, "
          f"max_failures={spec['max_failures']}, storage={spec['storage_path'] or 'ray default'}", flush=True)
    try:
        result = trainer.fit()  # Train V2 raises WorkerGroupError / ControllerError once retries are spent
    except TrainingFailedError as exc:
        if is_user_error(exc):
            print(f"error: {user_error_line(exc)}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR
        print(f"[mudpuppy] training failed ({type(exc).__name__}): {exc}", file=sys.stderr, flush=True)
        return 1
    where = result.checkpoint.path if result.checkpoint is not None else "(no checkpoint)"
    print(f"[mudpuppy] done; final outputs at {where}", flush=True)
    return EXIT_OK


def take_secrets(path: Path) -> dict[str, str] | None:
    """The secret values ``backends.ray`` packed into the working_dir; the file is deleted at once."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return {str(k): str(v) for k, v in data["values"].items()}


def with_secrets(values: dict[str, str], filename: str) -> Any:
    """The training function with the secret values inside it: Ray pickles it to each worker (object store),
    where they become environment variables of that worker and of what it starts; nothing Ray records or shows
    (runtime_env, train_loop_config) holds them."""
    def train_loop_with_secrets(spec: dict[str, Any]) -> None:
        remove_unpacked_copies(filename)
        os.environ.update(values)
        train_loop(spec)

    return train_loop_with_secrets


def remove_unpacked_copies(filename: str) -> None:
    """A worker on another node has the working_dir unpacked afresh, secrets file included: delete it there.

    Ray Train has already moved the worker into its own folder, so the working_dir is found where Ray started
    the process (``cd DIR && ...`` leaves ``$PWD``) and as the first ``PYTHONPATH`` entry Ray adds for it.
    """
    places = {Path.cwd(), *(Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)}
    if os.environ.get("PWD"):
        places.add(Path(os.environ["PWD"]))
    for place in places:
        (place / filename).unlink(missing_ok=True)


def fetch_bundle(location: str, folder: Path) -> Path:
    """Copy a bundle from an object store URI into ``folder`` (bundles over Ray's working_dir limit go through
    storage, see ``backends.ray``); atomic, so a rank never reads a half-copied file."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(location)
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / Path(path).name
    tmp = folder / f".{local.name}.{os.getpid()}"
    fs.copy_files(path, str(tmp), source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
    os.replace(tmp, local)
    print(f"[mudpuppy] fetched the bundle from {location}", flush=True)
    return local


# ---------------------------------------------------------------- inside each Ray Train worker


def train_loop(spec: dict[str, Any]) -> None:
    """Ray Train's per-worker function; a user error (bad config or data) becomes ``UserErrorExit``."""
    from mudpuppy.launcher.errors import UserError
    from mudpuppy.launcher.ray_user_error import UserErrorExit

    try:
        _train(spec)
    except UserError as exc:
        raise UserErrorExit(exc.one_line()) from None


def _train(spec: dict[str, Any]) -> None:
    import ray.train

    context = ray.train.get_context()
    node_ip = ray.util.get_node_ip_address()
    print(f"[mudpuppy] Train worker rank {context.get_world_rank()} of {context.get_world_size()} starting "
          f"on node {node_ip} (node rank {context.get_node_rank()})", flush=True)
    workdir = node_workdir(Path(spec["workdir"]) / spec["run_id"], context.get_node_rank(), node_ip)
    os.environ[ENV_WORKDIR] = str(workdir)
    if spec["entrypoint"] != DEFAULT_ENTRYPOINT:
        run_module(spec, workdir)
        return

    from mudpuppy.launcher.config import load_config
    from mudpuppy.launcher.ray_user_error import UserErrorExit
    from mudpuppy.runtime.entry import resolve_location
    from mudpuppy.runtime.env import read_env
    from mudpuppy.runtime.train.run import run_training
    from mudpuppy.runtime.train.signals import PreemptionWatcher

    if "://" in spec["bundle"]:  # one copy per node, then everyone reads it
        local = workdir.parent / f".bundle-{spec['run_id']}" / Path(spec["bundle"]).name
        if context.get_local_rank() == 0:
            fetch_bundle(spec["bundle"], local.parent)
        _barrier()
        spec = {**spec, "bundle": str(local)}
    config_path = resolve_location(spec["bundle"])  # extracts the bundle once and moves into workdir
    cfg = load_config(config_path).config
    output_dir = Path(cfg.output_dir).resolve()
    restored = restore(ray.train.get_checkpoint(), output_dir, local_rank=context.get_local_rank())
    _barrier()
    if restored == "final":
        print("[mudpuppy] the run already finished (final outputs reported); nothing to do", flush=True)
        return
    rank = context.get_world_rank()
    # Ray owns signals and restarts here; an uninstalled watcher keeps the runtime from touching handlers
    # (signal.signal only works on the main thread, and Ray runs this function on another one).
    code = run_training(cfg, env=read_env(), watcher=PreemptionWatcher(),
                        extra_callbacks=[report_callback(output_dir, rank, context.get_local_rank())])
    if code == EXIT_USER_ERROR:
        raise UserErrorExit("the runtime stopped on a user error (exit 2); see the messages above")
    if code != EXIT_OK:
        raise RuntimeError(f"the runtime exited {code}")
    report_final(output_dir, workdir, rank)


def node_workdir(run_dir: Path, node_rank: int, node_ip: str) -> Path:
    """This node's work folder: ``run_dir`` on the node that holds rank 0 (its outputs stay where the config says),
    ``run_dir/nodes/node-IP`` on every other node.

    Each node leader unpacks the bundle, builds the dataset cache and clears or restores checkpoints in its own
    output_dir, as if it had its own disk. When nodes share a filesystem (NFS home, several Ray nodes on one
    machine), a common folder would have them race on those same files; a folder per node keeps them apart and
    costs nothing when disks are separate. The node's IP (not its rank) names the folder, so a node keeps its
    folder across worker-group restarts.
    """
    return run_dir if node_rank == 0 else run_dir / NODES_DIR / f"node-{node_ip}"


def run_module(spec: dict[str, Any], workdir: Path) -> None:
    """A swapped ``launch.entrypoint`` (as on every backend: ``python -m MODULE BUNDLE``) in a child process with
    the worker's environment; no Ray checkpoints are reported for it."""
    workdir.mkdir(parents=True, exist_ok=True)
    code = subprocess.run([sys.executable, "-m", spec["entrypoint"], spec["bundle"]], cwd=workdir,
                          check=False).returncode
    if code != EXIT_OK:
        raise RuntimeError(f"{spec['entrypoint']} exited {code}")


def restore(checkpoint: Any, output_dir: Path, *, local_rank: int) -> str | None:
    """Make ``output_dir`` hold exactly Ray's checkpoint (or none): ``"final"``, ``"checkpoint-N"`` or None."""
    if checkpoint is None:
        if local_rank == 0:
            _clear_checkpoints(output_dir)
        return None
    with checkpoint.as_directory() as folder:
        source = Path(folder)
        if (source / FINAL_MARKER).is_file():
            return "final"
        step = _step_of(source)
        name = f"checkpoint-{step}"
        if local_rank == 0:
            _clear_checkpoints(output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            tmp = output_dir / f".restore-{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp)
            os.replace(tmp, output_dir / name)
            print(f"[mudpuppy] restored {name} from Ray ({checkpoint.path})", flush=True)
    return name


def _step_of(folder: Path) -> int:
    manifest = folder / "mudpuppy-manifest.json"
    if manifest.is_file():
        return int(json.loads(manifest.read_text())["step"])
    state = folder / "trainer_state.json"
    return int(json.loads(state.read_text())["global_step"])


def _clear_checkpoints(output_dir: Path) -> None:
    if output_dir.is_dir():
        for child in output_dir.glob("checkpoint-*"):
            shutil.rmtree(child, ignore_errors=True)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def report_callback(output_dir: Path, rank: int, local_rank: int = 0) -> Any:
    """A TrainerCallback: after each published checkpoint every worker reports, each node leader with its files.

    Ray Train V2 merges the checkpoints that workers report under one ``checkpoint_dir_name``, so a sharded
    checkpoint (FSDP / DeepSpeed write one shard per rank) is complete in storage only when every node uploads
    the shards its ranks wrote: rank 0 sends the published folder with the manifest, the first rank on every other
    node sends its node's files (``upload_folder``).
    """
    import ray.train
    from transformers import TrainerCallback

    class RayReport(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step
            metrics: dict[str, Any] = {"step": step}
            losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
            if losses:
                metrics["loss"] = losses[-1]
            folder = upload_folder(output_dir, step, rank=rank, local_rank=local_rank)
            checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if folder else None
            try:
                ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint-{step}",
                                 delete_local_checkpoint_after_upload=False)
            finally:
                if folder is not None and folder.name.startswith(".ray-upload-"):
                    shutil.rmtree(folder, ignore_errors=True)

    return RayReport()


def upload_folder(output_dir: Path, step: int, *, rank: int, local_rank: int) -> Path | None:
    """What this worker hands to Ray for ``checkpoint-STEP``: None, or a folder on this node.

    Rank 0: the published checkpoint (manifest written last, so a folder without one is not reported). The
    first rank of any other node: the files its node holds for that step (published there with
    ``save_on_each_node``, else still under ``.staging``), hard-linked into a private folder without the node's own
    manifest, so rank 0's manifest is the one that lands in storage. Every other rank shares its node leader's disk.
    """
    from mudpuppy.runtime.checkpoints.atomic import staging_root

    published = output_dir / f"checkpoint-{step}"
    if rank == 0:
        return published if (published / MANIFEST).is_file() else None
    if local_rank != 0:
        return None
    staged = staging_root(output_dir) / f"checkpoint-{step}"
    source = staged if staged.is_dir() else published
    if not source.is_dir():
        return None
    target = output_dir / f".ray-upload-checkpoint-{step}-rank{rank}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(MANIFEST))
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def report_final(output_dir: Path, workdir: Path, rank: int) -> None:
    import ray.train

    checkpoint = None
    if rank == 0:
        final = workdir / "final"
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(output_dir, final, ignore=shutil.ignore_patterns("checkpoint-*", ".*"))
        (final / FINAL_MARKER).write_text(json.dumps({"output_dir": str(output_dir)}) + "\n")
        checkpoint = ray.train.Checkpoint.from_directory(str(final))
    ray.train.report({"final": 1}, checkpoint=checkpoint, checkpoint_dir_name="final",
                     delete_local_checkpoint_after_upload=False)


if __name__ == "__main__":
    sys.exit(main())
