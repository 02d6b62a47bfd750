"""``mudpuppy runs``: the run registry as a table."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import click


@click.command()
@click.option("--limit", "-n", default=20, show_default=True, help="Newest N runs.")
@click.option("--backend", help="Only runs on this backend.")
@click.option("--refresh", is_flag=True, help="Ask each backend for the state of unfinished runs first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--group", "-g", help="A sweep's members with their final metrics, best first.")
def runs(limit: int, backend: str | None, refresh: bool, as_json: bool, group: str | None) -> None:
    """List runs: id, name, backend, status, attempts, age, progress (step, loss, tokens/s, ETA from each run's
    metrics.jsonl where this machine reaches it, else today's `status` answer, else "-"), elapsed cost, outputs.
    With --group, a sweep's members with their final metrics, best first."""
    from mudpuppy.launcher.registry import Registry

    if group:
        from mudpuppy.launcher.cli.sweep_group import show_group

        return show_group(group, refresh=refresh, as_json=as_json)

    registry = Registry()
    records = registry.list(limit=limit, backend=backend)
    if refresh:
        from mudpuppy.launcher.dispatch import refresh as refresh_one
        from mudpuppy.launcher.errors import UserError

        fresh = []
        for record in records:
            if record.status in ("submitted", "pending", "running", "unknown") and record.handle:
                with contextlib.suppress(UserError):  # an unreachable host leaves the stored state
                    record, _status = refresh_one(record, registry)
            fresh.append(record)
        records = fresh
    from mudpuppy.launcher import progress_view

    now = time.time()
    views = {r.id: progress_view.build(r, use_logs=False, now=now) for r in records}  # files and today's cache only
    if as_json:
        for record in records:
            data = record.to_dict()
            data.pop("launch", None)
            data.update(views[record.id].fields())
            click.echo(json.dumps(data, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs ({registry.path})")
    for column in ("id", "name", "backend", "status", "attempts", "age", "step", "loss", "tok/s", "eta", "cost",
                   "output / reason"):
        table.add_column(column)
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    for r in records:
        colour = colours.get(r.status, "white")
        detail = r.reason if r.status == "failed" and r.reason else (r.output or "")
        view = views[r.id]
        p = view.progress
        eta = None if r.status in progress_view.TERMINAL else p.eta_s
        table.add_row(r.id, r.name, r.backend, f"[{colour}]{r.status}[/]", str(r.attempts), _age(now - r.created),
                      progress_view.step_text(p), progress_view.number(p.loss),
                      progress_view.number(p.tokens_per_second, "{:,.0f}"),
                      progress_view.prog.duration(eta) if eta is not None else "-", _cost(view), detail)
    Console().print(table)


def _cost(view: Any) -> str:
    if view.cost is not None:
        return f"${view.cost:,.2f}"
    return f"{view.gpu_hours:,.2f} GPU-h" if view.gpu_hours is not None else "-"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
