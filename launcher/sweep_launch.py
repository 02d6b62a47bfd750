"""Submit a sweep's members as one registry group, the way each backend runs many jobs best.

- slurm: one job array (``backends.slurm_array``), throttled with ``%N``;
- ray, skypilot, modal: one submission per member, all at once (Ray jobs, managed jobs, Modal calls);
- local, ssh: one member after another, each followed to its end: they share one machine (or one host list)
  whose GPUs a second member would fight over.
Every member is an ordinary registry row carrying the group id, so ``status``/``logs``/``cancel`` work per member.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mudpuppy.launcher import dispatch
from mudpuppy.launcher.errors import UserError
from mudpuppy.launcher.registry import Registry, RunRecord, new_run_id
from mudpuppy.launcher.sweep import Member, expand

SEQUENTIAL = ("local", "ssh")
# How each backend runs a sweep's members (shown by `mudpuppy backends`).
SWEEP_MODES = {
    "local": "members one after another",
    "ssh": "members one after another on the hosts",
    "slurm": "one job array, %N throttle",
    "ray": "one Ray job per member",
    "skypilot": "one (managed) job per member",
    "modal": "one app run per member",
}
Echo = Callable[[str], None]


@dataclass
class Group:
    group_id: str
    config_path: str
    members: list[Member]
    prepared: list[dispatch.Prepared]

    @property
    def backend(self) -> str:
        return self.prepared[0].plan.backend


def prepare_group(config_path: str, base: dict[str, Any], specs: list[str]) -> Group:
    members = expand(config_path, base, specs)
    prepared = [dispatch.prepare(config_path, m.overrides, new_run_id()) for m in members]
    return Group(new_run_id(), config_path, members, prepared)


def throttle_for(group: Group, max_parallel: int | None) -> int | None:
    return max_parallel or group.prepared[0].backend.launch.slurm.array_throttle


def render(group: Group, max_parallel: int | None) -> str:
    """The dry run: the group's facts, the SLURM array script where there is one, then every member's plan."""
    first = group.prepared[0]
    how = {"slurm": "one job array", "local": "one after another", "ssh": "one after another"}.get(
        group.backend, "one job per member, all at once")
    out = [f"# sweep {group.group_id}: {len(group.members)} members on {group.backend} ({how})"]
    for member, prep in zip(group.members, group.prepared, strict=True):
        values = " ".join(f"{k}={v}" for k, v in member.values.items())
        out.append(f"#   {member.index}: {member.name}  run {prep.plan.run_id}  {values}  output_dir {prep.output_dir}")
    if group.backend == "slurm":
        from mudpuppy.backends.slurm_array import materialize_array

        out.append(f"# ---- the array script (WORKDIR/sweeps/{group.group_id}.sbatch) ----")
        out.append(materialize_array(first.backend, group.group_id, [p.plan for p in group.prepared],  # type: ignore[arg-type]
                                     throttle_for(group, max_parallel), _group_name(group)).rstrip("\n"))
    text = "\n".join(out) + "\n"
    for member, prep in zip(group.members, group.prepared, strict=True):
        text += f"# ---- member {member.index}: {member.name} ----\n" + prep.plan.render()
    return text


def _group_name(group: Group) -> str:
    name = group.prepared[0].backend.launch.name or "mudpuppy"
    return name.removesuffix("-" + group.members[0].name)


def submit_group(group: Group, registry: Registry, *, max_parallel: int | None, follow: bool, echo: Echo,
                 on_line: Echo | None = None) -> list[RunRecord]:
    """Submit every member (and, for local/ssh, run them one by one to the end). Returns the registry rows."""
    if group.backend == "slurm":
        return _submit_array(group, registry, throttle_for(group, max_parallel))
    if max_parallel:
        echo(f"--max-parallel applies to SLURM job arrays; {group.backend} runs "
             + ("members one after another" if group.backend in SEQUENTIAL else "all members at once"))
    records = []
    for member, prep in zip(group.members, group.prepared, strict=True):
        record = dispatch.submit(prep, group.config_path, registry, group_id=group.group_id)
        echo(f"member {member.name}: run {record.id} submitted to {record.backend}: {record.handle}")
        records.append(record)
        if group.backend in SEQUENTIAL:
            status = dispatch.wait(record, registry, on_line=on_line if follow else None)
            echo(f"member {member.name}: run {record.id} {status.state.value}"
                 + (f": {status.reason}" if status.reason else ""))
    return records


def _submit_array(group: Group, registry: Registry, throttle: int | None) -> list[RunRecord]:
    from mudpuppy.backends.base import State
    from mudpuppy.backends.slurm_array import submit_array

    records = []
    for member, prep in zip(group.members, group.prepared, strict=True):
        launch = prep.backend.launch
        records.append(registry.create(
            run_id=prep.plan.run_id, name=launch.name or member.name, backend=prep.plan.backend,
            bundle_hash=prep.bundle.digest, config_path=dispatch.stored_config_path(group.config_path),
            launch=launch.model_dump_json(), group_id=group.group_id,
        ))
    try:
        handles = submit_array([p.backend for p in group.prepared], [p.plan for p in group.prepared],  # type: ignore[misc]
                               group.group_id, throttle, _group_name(group))
    except BaseException as exc:
        reason = exc.one_line() if isinstance(exc, UserError) else f"submit crashed: {type(exc).__name__}"
        for record in records:
            registry.update(record.id, status=State.FAILED.value, reason=reason)
        raise
    return [
        registry.update(record.id, handle=str(handle), status=State.SUBMITTED.value,
                        output=prep.backend.output_location(prep.plan, prep.output_dir))
        for record, handle, prep in zip(records, handles, group.prepared, strict=True)
    ]


def wait_group(records: list[RunRecord], registry: Registry, echo: Echo, poll_s: float = 2.0) -> list[str]:
    """Poll every member until all are terminal, saying when each ends; returns the final states."""
    pending = {r.id: r for r in records}
    states = {r.id: r.status for r in records}
    while pending:
        for run_id, record in list(pending.items()):
            record, status = dispatch.refresh(record, registry)
            pending[run_id] = record
            if status.state.terminal:
                states[run_id] = status.state.value
                echo(f"run {run_id} ({record.name}) {status.state.value}"
                     + (f": {status.reason}" if status.reason else ""))
                del pending[run_id]
        if pending:
            time.sleep(poll_s)
    return [states[r.id] for r in records]


__all__ = ["Group", "prepare_group", "render", "submit_group", "wait_group"]
