"""``mudpuppy runs``: the run registry as a table."""

from __future__ import annotations

import contextlib
import json
import time

import click


@click.command()
@click.option("--limit", "-n", default=20, show_default=True, help="Newest N runs.")
@click.option("--backend", help="Only runs on this backend.")
@click.option("--refresh", is_flag=True, help="Ask each backend for the state of unfinished runs first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--group", "-g", help="A sweep's members with their final metrics, best first.")
def runs(limit: int, backend: str | None, refresh: bool, as_json: bool, group: str | None) -> None:
    """List runs: id, name, backend, status, attempts, age, where the outputs are."""
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
    if as_json:
        for record in records:
            data = record.to_dict()
            data.pop("launch", None)
            click.echo(json.dumps(data, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs ({registry.path})")
    for column in ("id", "name", "backend", "status", "attempts", "age", "output / reason"):
        table.add_column(column)
    now = time.time()
    colours = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    for r in records:
        colour = colours.get(r.status, "white")
        detail = r.reason if r.status == "failed" and r.reason else (r.output or "")
        table.add_row(r.id, r.name, r.backend, f"[{colour}]{r.status}[/]", str(r.attempts), _age(now - r.created),
                      detail)
    Console().print(table)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
