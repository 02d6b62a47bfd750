"""``launch CONFIG --sweep KEY=V1,V2 ...``: the command-line side of a sweep (messages, following, exit code)."""

from __future__ import annotations

import sys
from typing import Any

import click


def launch_sweep(config_path: str, overrides: dict[str, Any], specs: list[str], *, dry_run: bool,
                 max_parallel: int | None) -> int:
    from mudpuppy.launcher.cli import warn
    from mudpuppy.launcher.registry import Registry
    from mudpuppy.launcher.sweep_launch import SEQUENTIAL, prepare_group, render, submit_group, wait_group

    group = prepare_group(config_path, overrides, specs)
    for line in dict.fromkeys(w for p in group.prepared for w in p.warnings):
        warn(line)
    if dry_run:
        click.echo(render(group, max_parallel), nl=False)
        return 0

    def err(line: str) -> None:
        click.echo(line, err=True)

    def out(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    detach = group.prepared[0].backend.launch.detach
    if detach and group.backend in SEQUENTIAL:
        warn(f"{group.backend} sweeps run one member after another from this command; --detach only stops "
             "their logs from being shown")
    err(f"sweep {group.group_id}: {len(group.members)} members on {group.backend}")
    registry = Registry()
    try:
        records = submit_group(group, registry, max_parallel=max_parallel, follow=not detach, echo=err, on_line=out)
    except KeyboardInterrupt:
        err(f"\nstopped; members already submitted go on. `mudpuppy runs --group {group.group_id}`")
        return 130
    if group.backend == "slurm":
        for record in records:
            err(f"run {record.id} ({record.name}) submitted: {record.handle}")
    if detach or group.backend in SEQUENTIAL:
        states = [registry.get(r.id).status for r in records]
    else:
        try:
            states = wait_group(records, registry, err)
        except KeyboardInterrupt:
            err(f"\nstopped following; the sweep goes on. `mudpuppy runs --group {group.group_id}`")
            return 130
    err(f"`mudpuppy runs --group {group.group_id}` compares the members")
    click.echo(group.group_id)
    if detach:
        return 0
    return 0 if all(s == "succeeded" for s in states) else 1


def show_group(ref: str, *, refresh: bool, as_json: bool) -> None:
    """``runs --group G``: the members ranked by final eval loss (else train loss), metrics read where they are."""
    import contextlib
    import json

    from mudpuppy.launcher.errors import UserError
    from mudpuppy.launcher.registry import Registry
    from mudpuppy.launcher.sweep_report import results

    registry = Registry()
    records = registry.group(ref)
    if refresh:
        from mudpuppy.launcher.dispatch import refresh as refresh_one

        fresh = []
        for record in records:
            if record.status in ("submitted", "pending", "running", "unknown") and record.handle:
                with contextlib.suppress(UserError):
                    record, _status = refresh_one(record, registry)
            fresh.append(record)
        records = fresh
    ranked = results(records)
    if as_json:
        for rank, r in enumerate(ranked, 1):
            click.echo(json.dumps({"rank": rank, "id": r.record.id, "name": r.record.name, "status": r.record.status,
                                   "step": r.step, "loss": r.loss, "eval_loss": r.eval_loss,
                                   "learning_rate": r.learning_rate, "metrics": r.source,
                                   "output": r.record.output}, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {records[0].group_id} ({len(records)} members, best first)")
    for column in ("#", "name", "id", "status", "step", "loss", "eval loss", "peak lr", "output"):
        table.add_column(column)
    for rank, r in enumerate(ranked, 1):
        table.add_row(str(rank), r.record.name, r.record.id, r.record.status, _fmt(r.step), _fmt(r.loss),
                      _fmt(r.eval_loss), _fmt(r.learning_rate, "{:.2e}"), r.record.output or "")
    Console().print(table)


def _fmt(value: float | int | None, pattern: str = "{:.4f}") -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else pattern.format(value)
