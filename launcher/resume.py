"""``mudpuppy resume RUN --backend B``: continue a stopped run, here or on another backend, from its volume.

Why it works: every start of the runtime with a volume (``MUDPUPPY_VOLUME``, which each backend sets from
``launch.volume``) pulls the newest checkpoint there whose sha256 all match, before it builds the trainer
(``runtime.checkpoints.sync.restore_latest``). So continuing a run is submitting the *same bundle* (same config,
data and seed) with the *same volume* to any backend: a spot run that keeps losing capacity on SkyPilot goes on on
SLURM. Only the ``launch:`` section changes (backend, GPUs, nodes, and any ``--launch.*`` override); the config the
run trained with is the one in its bundle, never a file that may have changed since.

The new attempt is its own registry row whose ``parent_id`` is the run it continues, so ``runs`` and ``status``
can show the chain. Refused (one line each): a run without a volume (nothing reachable to resume from), a run
that finished (its outputs are complete; ``pull`` fetches them), a run that is still going, and a bundle that is
gone from this machine.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudpuppy.backends.base import State, get_backend
from mudpuppy.launcher.bundle import Bundle
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.contract import BUNDLE_CONFIG, BUNDLE_IMAGE, BUNDLE_SUFFIX
from mudpuppy.launcher.dispatch import Prepared
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry, RunRecord, state_dir

UNFINISHED = (State.SUBMITTED.value, State.PENDING.value, State.RUNNING.value, "submitting")


@dataclass(frozen=True)
class ResumePlan:
    parent: RunRecord
    prepared: Prepared
    volume: str
    newest_step: int | None  # the newest complete checkpoint on the volume when the plan was made (None: none, or
    # the volume cannot be read from this machine)


def resume_launch(record: RunRecord, overrides: dict[str, Any]) -> LaunchSection:
    """The run's recorded ``launch:`` section with ``overrides`` (``backend``/``gpus``/``nodes`` or dotted
    ``launch.*`` keys) applied, validated as a fresh section so a bad value is one line naming its key."""
    from pydantic import ValidationError

    data: dict[str, Any] = json.loads(record.launch or "{}")
    for key, value in overrides.items():
        dotted = key.removeprefix("launch.")
        if dotted == key:
            raise UserError(f"resume changes only where the run goes (launch.* keys); {key!r} is a training key "
                            "and the run keeps the config it started with",
                            hint="launch a new run to train with other settings")
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    try:
        return LaunchSection.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"launch.{where}: {first['msg']}") from None


def load_bundle(record: RunRecord) -> Bundle:
    """The bundle the run was submitted with, from this machine's bundle store."""
    from mudpuppy.launcher.bundle import DIGEST_CHARS

    path = state_dir() / "bundles" / f"{record.bundle_hash[:DIGEST_CHARS]}{BUNDLE_SUFFIX}"
    if not path.is_file():
        raise UserError(f"the bundle of run {record.id} ({path}) is no longer on this machine",
                        hint=f"launch its config again with the same launch.volume ({record.config_path}): "
                        "it resumes from the volume's newest checkpoint too")
    with tarfile.open(path, "r:*") as tar:
        config = _member(tar, BUNDLE_CONFIG, path)
        image = json.loads(_member(tar, BUNDLE_IMAGE, path))
    return Bundle(path=path, digest=record.bundle_hash, config_text=config, image=image, reused=True)


def _member(tar: tarfile.TarFile, name: str, path: Path) -> str:
    handle = tar.extractfile(name)
    if handle is None:
        raise UserError(f"{path} is not a mudpuppy bundle (no {name})")
    return handle.read().decode("utf-8")


def plan_resume(record: RunRecord, overrides: dict[str, Any], registry: Registry, run_id: str) -> ResumePlan:
    """Check that ``record`` can be continued and plan the next attempt (nothing is submitted)."""
    import yaml

    from mudpuppy.launcher.dispatch import refresh
    from mudpuppy.launcher.pull import launch_of, volume_source, volume_url_of

    if record.status in UNFINISHED and record.handle:
        with contextlib.suppress(UserError):  # an unreachable cluster: judge by the recorded state
            record, _status = refresh(record, registry)
    if record.status in UNFINISHED:
        raise UserError(f"run {record.id} is still {record.status} on {record.backend}",
                        hint=f"`mudpuppy cancel {record.id}` first (it checkpoints on the way out), then resume it")
    for child in registry.list(limit=1_000_000):  # two attempts of one run must never write one volume at once
        if child.parent_id == record.id and child.status in UNFINISHED:
            if child.handle:
                with contextlib.suppress(UserError):
                    child, _status = refresh(child, registry)
            if child.status in UNFINISHED:
                raise UserError(f"run {record.id} is already being continued by {child.id} ({child.status} on "
                                f"{child.backend})", hint=f"wait for it, or `mudpuppy cancel {child.id}` and resume "
                                "that one")
    old_launch = launch_of(record)
    url = volume_url_of(record, old_launch)
    if not url:
        raise UserError(f"run {record.id} has no volume, so no checkpoint is reachable from another attempt",
                        hint="runs resume from launch.volume (file:// on shared storage, s3://, gs://, modal://); "
                        "relaunch with one")
    if record.status == State.SUCCEEDED.value:
        raise UserError(f"run {record.id} has finished: its outputs are in {record.output or url}",
                        hint=f"`mudpuppy pull {record.id}` copies them here")
    launch = resume_launch(record, overrides)
    new_url = _synced_volume(launch, run_id)
    if new_url != url:
        raise UserError(f"the resumed run would sync to {new_url or 'no volume'}, not to {url} where run "
                        f"{record.id}'s checkpoints are",
                        hint="set --launch.volume to that URL (on SkyPilot, a launch.volume rather than "
                        "launch.skypilot.bucket, whose folder is per run)")
    newest: int | None = None
    try:  # the volume need only be reachable where the job runs (a cluster's shared storage): checked if seen here
        source = volume_source(url, old_launch)
    except UserError:
        source = None
    if source is not None:
        if source.read_text("mudpuppy-outputs.json") is not None:
            raise UserError(f"run {record.id} has finished: its outputs are complete on {url}",
                            hint=f"`mudpuppy pull {record.id}` copies them here")
        newest = _newest_step(source)
    bundle = load_bundle(record)
    backend = get_backend(launch.backend, launch)
    plan = backend.plan(bundle, run_id)
    output_dir = str((yaml.safe_load(bundle.config_text) or {}).get("output_dir") or "./outputs")
    return ResumePlan(record, Prepared(backend, bundle, plan, [], output_dir), url, newest)


def _synced_volume(launch: LaunchSection, run_id: str) -> str | None:
    """The volume the new attempt's runtime will sync to (what its backend puts in ``MUDPUPPY_VOLUME``)."""
    if launch.backend == "skypilot":
        from mudpuppy.backends.skypilot import volume_url

        return volume_url(launch, run_id)
    return launch.volume or None


def _newest_step(source: Any) -> int | None:
    from mudpuppy.launcher.pull import _complete_checkpoints
    from mudpuppy.runtime.checkpoints.manifest import checkpoint_step

    complete, _incomplete = _complete_checkpoints(source)
    return checkpoint_step(Path(complete[-1][0])) if complete else None


def submit_resume(plan: ResumePlan, registry: Registry) -> RunRecord:
    """Record the new attempt (``parent_id`` = the run it continues), submit it, store its handle."""
    from mudpuppy.launcher import dispatch

    return dispatch.submit(plan.prepared, plan.parent.config_path, registry, parent=plan.parent)


def chain(registry: Registry, record: RunRecord) -> list[RunRecord]:
    """The attempts of one run, first to ``record``, following ``parent_id``."""
    out = [record]
    seen = {record.id}
    while out[0].parent_id and out[0].parent_id not in seen:
        try:
            parent = registry.get(out[0].parent_id)
        except UserError:
            break
        seen.add(parent.id)
        out.insert(0, parent)
    return out


__all__ = ["ResumePlan", "chain", "load_bundle", "plan_resume", "resume_launch", "submit_resume"]
