"""``mudpuppy status RUN``: the backend's current answer, stored back into the registry."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True)
def status(run: str, as_json: bool) -> int:
    """Show the state of RUN (id, id prefix or name); exit 0 if it succeeded, 1 if it failed, 3 otherwise."""
    from mudpuppy.launcher.dispatch import refresh
    from mudpuppy.launcher.registry import Registry

    registry = Registry()
    record, state = refresh(registry.get(run), registry)
    data = {
        "id": record.id, "name": record.name, "backend": record.backend, "handle": record.handle,
        "status": state.state.value, "native": state.native, "reason": state.reason, "attempts": record.attempts,
        "restarts": max(record.attempts - 1, 0),
        "exit_code": state.exit_code, "output": record.output, "bundle": record.bundle_hash[:16],
    }
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        for key, value in data.items():
            if value is not None:
                click.echo(f"{key:>9}: {value}")
    return {"succeeded": 0, "failed": 1, "cancelled": 1}.get(state.state.value, 3)
