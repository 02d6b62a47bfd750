"""After a submit: print the record's id and return (detached), or follow the run's logs to its end.

Shared by ``launch`` and ``resume`` so both answer Ctrl-C and exit codes the same way: 0 when the run succeeded,
1 when it failed or was cancelled, 130 when the user stopped following (the run goes on)."""

from __future__ import annotations

import sys

import click

from mudpuppy.launcher.registry import Registry, RunRecord


def follow_or_detach(record: RunRecord, registry: Registry, *, detach: bool) -> int:
    from mudpuppy.launcher import dispatch

    if record.output:
        click.echo(f"outputs go to {record.output}", err=True)
    if detach:
        click.echo(record.id)
        return 0

    def echo(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()

    try:
        status = dispatch.wait(record, registry, on_line=echo)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the run goes on. `mudpuppy logs -f {record.id}` or "
                   f"`mudpuppy cancel {record.id}`", err=True)
        return 130
    reason = f": {status.reason}" if status.reason else ""
    click.echo(f"run {record.id} {status.state.value}{reason}", err=True)
    return 0 if status.state.value == "succeeded" else 1
