"""``mudpuppy resume RUN --backend B``: the next attempt of a stopped run, from its volume's newest checkpoint."""

from __future__ import annotations

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT


@click.command(context_settings=OVERRIDE_CONTEXT)
@click.argument("run")
@click.option("--backend", "-b", type=click.Choice(["local", "ssh", "slurm", "ray", "skypilot", "modal"]),
              help="Where to go on (default: where it ran).")
@click.option("--gpus", help="GPUs per node: H100:8, A100-80GB:4 or a count.")
@click.option("--nodes", type=click.IntRange(min=1), help="Number of nodes (a new world size reshards FSDP2/DCP).")
@click.option("--spot/--no-spot", default=None, help="Use preemptible capacity where the backend has it.")
@click.option("--detach", "-d", is_flag=True, default=None, help="Return after submitting; do not follow logs.")
@click.option("--retries", type=click.IntRange(min=0), help="Restarts after preemption (overrides launch.retries).")
@click.option("--dry-run", is_flag=True, help="Print the plan of the next attempt and submit nothing.")
@click.pass_context
def resume(ctx: click.Context, run: str, backend: str | None, gpus: str | None, nodes: int | None,
           spot: bool | None, detach: bool | None, retries: int | None, dry_run: bool) -> int:
    """Continue RUN (preempted, failed or cancelled) on the same or another backend, from the newest verified
    checkpoint on its volume. Extra --launch.KEY value pairs change where it runs (e.g. --launch.slurm.partition);
    the training config stays the one the run started with."""
    from mudpuppy.launcher import dispatch
    from mudpuppy.launcher.config import parse_override_args
    from mudpuppy.launcher.registry import Registry, new_run_id
    from mudpuppy.launcher.resume import chain, plan_resume, submit_resume

    overrides = parse_override_args(list(ctx.args))
    overrides.update(dispatch.flag_overrides(backend=backend, gpus=gpus, nodes=nodes, spot=spot, detach=detach,
                                             retries=retries))
    registry = Registry()
    parent = registry.get(run)
    plan = plan_resume(parent, overrides, registry, new_run_id())
    prepared = plan.prepared
    start = f"checkpoint-{plan.newest_step}" if plan.newest_step is not None else "its newest verified checkpoint"
    if dry_run:
        click.echo(f"# resumes run {parent.id} from {start} on {plan.volume}")
        click.echo(prepared.plan.render(), nl=False)
        return 0
    record = submit_resume(plan, registry)
    attempts = chain(registry, record)
    click.echo(f"run {record.id} submitted to {record.backend}: {record.handle}", err=True)
    click.echo(f"continues {parent.id} from {start} on {plan.volume} (attempt {len(attempts)} of this run: "
               f"{' -> '.join(r.id for r in attempts)})", err=True)
    from mudpuppy.launcher.cli.follow import follow_or_detach

    return follow_or_detach(record, registry, detach=bool(prepared.backend.launch.detach))
