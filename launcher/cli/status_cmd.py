"""``mudpuppy status RUN``: the backend's current answer, stored back into the registry, and the run's progress
(step/total, loss, tokens/s, ETA from its ``metrics.jsonl``; elapsed GPU-hours and cost)."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import click


@click.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True)
def status(run: str, as_json: bool) -> int:
    """Show the state of RUN (id, id prefix or name); exit 0 if it succeeded, 1 if it failed, 3 otherwise."""
    from mudpuppy.launcher import dispatch, progress_view
    from mudpuppy.launcher.registry import Registry

    registry = Registry()
    record, state = dispatch.refresh(registry.get(run), registry)
    data = {
        "id": record.id, "name": record.name, "backend": record.backend, "handle": record.handle,
        "status": state.state.value, "native": state.native, "reason": state.reason, "attempts": record.attempts,
        "restarts": max(record.attempts - 1, 0),
        "exit_code": state.exit_code, "output": record.output, "bundle": record.bundle_hash[:16],
        "continues": record.parent_id, "group": record.group_id,
    }
    def log_lines() -> list[str]:  # the newest progress line is in the last 2,000 lines
        return list(deque(dispatch.iter_logs(record, follow=False), maxlen=2000))

    view = progress_view.build(record, use_logs=bool(record.handle), logs=log_lines, allow_slow_price=True)
    if record.status in progress_view.TERMINAL:
        view.progress.eta_s = None
    data.update(view.fields())
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        for key in ("id", "name", "backend", "handle", "status", "native", "reason", "attempts", "restarts",
                    "exit_code", "output", "bundle", "continues", "group"):
            if data[key] is not None:
                click.echo(f"{key:>9}: {data[key]}")
        for key, value in _progress_lines(view):
            click.echo(f"{key:>9}: {value}")
    return {"succeeded": 0, "failed": 1, "cancelled": 1}.get(state.state.value, 3)


def _progress_lines(view: Any) -> list[tuple[str, str]]:
    from mudpuppy.launcher import progress_view as pv

    p = view.progress
    lines = [("progress", pv.step_text(p) + (f" [{p.source}]" if p.source and p.step is not None else ""))]
    if p.step is None and p.problem:
        lines[0] = ("progress", f"- ({p.problem})")
    elif p.problem:
        lines.append(("warning", p.problem))
    if p.loss is not None:
        lines.append(("loss", pv.number(p.loss)))
    if p.eval_loss is not None:
        lines.append(("eval_loss", pv.number(p.eval_loss)))
    if p.tokens_per_second is not None:
        lines.append(("tokens/s", f"{p.tokens_per_second:,.0f}"))
    if p.eta_s is not None:
        lines.append(("eta", pv.prog.duration(p.eta_s)))
    lines.append(("elapsed", pv.prog.duration(view.elapsed_s)))
    if view.gpu_hours is not None:
        cost = f", ${view.cost:,.2f} ({view.price_note})" if view.cost is not None else ""
        lines.append(("cost", f"{view.gpu_hours:,.3f} GPU-hours{cost}"))
    elif view.price_note:
        lines.append(("cost", view.price_note))
    return lines
