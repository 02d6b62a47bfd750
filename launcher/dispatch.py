"""``launch`` end to end: config -> bundle -> plan -> submit -> registry, and the way back from a run id.

A submission that fails with a ``UserError`` (unreachable host, missing sbatch, unknown partition) still
leaves a registry row, marked failed with the reason, so ``mudpuppy runs`` tells the whole story.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mudpuppy.backends.base import Backend, Handle, Plan, RunStatus, State, get_backend
from mudpuppy.launcher.bundle import Bundle, build_bundle, local_root_for
from mudpuppy.launcher.config import load_config
from mudpuppy.launcher.config.schema.launch import LaunchSection
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.image import mudpuppy_wheel
from mudpuppy.launcher.registry import Registry, RunRecord, cache_dir, state_dir


@dataclass
class Prepared:
    backend: Backend
    bundle: Bundle
    plan: Plan
    warnings: list[str]
    output_dir: str


def flag_overrides(
    *,
    backend: str | None = None,
    gpus: str | None = None,
    nodes: int | None = None,
    spot: bool | None = None,
    detach: bool | None = None,
    name: str | None = None,
    retries: int | None = None,
) -> dict[str, Any]:
    """CLI flags as ``launch.*`` overrides: they win over the config's ``launch:`` section."""
    values = {"backend": backend, "gpus": gpus, "nodes": nodes, "spot": spot, "detach": detach, "name": name,
              "retries": retries}
    return {f"launch.{key}": value for key, value in values.items() if value is not None}


def prepare(config_path: str, overrides: dict[str, Any], run_id: str) -> Prepared:
    loaded = load_config(config_path, overrides)
    config = loaded.config
    backend = get_backend(config.launch.backend, config.launch)
    bundle = build_bundle(config, state_dir() / "bundles", wheel=mudpuppy_wheel(cache_dir()),
                          confine_to=local_root_for(config_path))
    plan = backend.plan(bundle, run_id)
    return Prepared(backend, bundle, plan, list(loaded.warnings), config.output_dir)


def stored_config_path(config_path: str) -> str:
    return str(Path(config_path).resolve()) if "://" not in config_path else config_path


def submit(prepared: Prepared, config_path: str, registry: Registry | None = None,
           group_id: str | None = None, parent: RunRecord | None = None) -> RunRecord:
    """Record the run, submit it, store its handle. ``parent``: the run this attempt continues (``resume``);
    the new row keeps its name, config path and sweep group and points back at it."""
    registry = registry or Registry()
    plan = prepared.plan
    launch = prepared.backend.launch
    record = registry.create(
        run_id=plan.run_id,
        name=launch.name or (parent.name if parent else Path(config_path).stem),
        backend=plan.backend,
        bundle_hash=prepared.bundle.digest,
        config_path=parent.config_path if parent else stored_config_path(config_path),
        launch=launch.model_dump_json(),
        group_id=parent.group_id if parent and group_id is None else group_id,
        parent_id=parent.id if parent else None,
    )
    try:
        handle = prepared.backend.submit(plan)
    except UserError as exc:
        registry.update(record.id, status=State.FAILED.value, reason=exc.one_line())
        raise
    except BaseException as exc:
        registry.update(record.id, status=State.FAILED.value, reason=f"submit crashed: {type(exc).__name__}")
        raise
    return registry.update(
        record.id,
        handle=str(handle),
        status=State.SUBMITTED.value,
        output=prepared.backend.output_location(plan, prepared.output_dir),
    )


def backend_for(record: RunRecord) -> tuple[Backend, Handle]:
    if not record.handle:
        raise UserError(f"run {record.id} was never submitted ({record.status}: {record.reason or 'no reason'})")
    launch = LaunchSection.model_validate(json.loads(record.launch or "{}"))
    return get_backend(record.backend, launch), Handle.parse(record.handle)


def refresh(record: RunRecord, registry: Registry) -> tuple[RunRecord, RunStatus]:
    """Ask the backend for the run's state and store it; terminal rows are not asked again."""
    if record.status in (State.SUCCEEDED.value, State.CANCELLED.value) or not record.handle:
        return record, RunStatus(State(record.status) if record.status in State._value2member_map_ else
                                 State.FAILED, reason=record.reason, attempts=record.attempts)
    backend, handle = backend_for(record)
    status = backend.status(handle)
    fields: dict[str, Any] = {"status": status.state.value, "reason": status.reason}
    if status.attempts is not None:
        fields["attempts"] = status.attempts
    return registry.update(record.id, **fields), status


def wait(record: RunRecord, registry: Registry, *, poll_s: float = 2.0, timeout_s: float | None = None,
         on_line: Callable[[str], None] | None = None) -> RunStatus:
    """Follow the logs (if ``on_line``) and return once the run is terminal."""
    backend, handle = backend_for(record)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    if on_line is not None and backend.capabilities.follow_logs:
        for line in backend.logs(handle, follow=True):
            on_line(line)
    while True:
        record, status = refresh(record, registry)
        if status.state.terminal:
            return status
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(poll_s)


def iter_logs(record: RunRecord, follow: bool) -> Iterator[str]:
    backend, handle = backend_for(record)
    if not backend.capabilities.logs:
        raise UserError(f"the {record.backend} backend cannot show logs")
    yield from backend.logs(handle, follow=follow)


def cancel(record: RunRecord, registry: Registry, keep: bool = False) -> RunRecord:
    backend, handle = backend_for(record)
    if not backend.capabilities.cancel:
        raise UserError(f"the {record.backend} backend cannot cancel runs")
    backend.keep_resources = keep
    backend.cancel(handle)
    return registry.update(record.id, status=State.CANCELLED.value, reason="cancelled by user")


__all__ = ["Prepared", "backend_for", "cancel", "flag_overrides", "iter_logs", "prepare", "refresh",
           "stored_config_path", "submit", "wait"]
