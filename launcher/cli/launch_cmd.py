"""``mudpuppy launch CONFIG``: validate, bundle, plan, submit (or print the plan with --dry-run)."""

from __future__ import annotations

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument


@click.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--backend", "-b", type=click.Choice(["local", "ssh", "slurm", "ray", "skypilot", "modal"]),
              help="Where to run (overrides launch.backend).")
@click.option("--gpus", help="GPUs per node: H100:8, A100-80GB:4 or a count (overrides launch.gpus).")
@click.option("--nodes", type=click.IntRange(min=1), help="Number of nodes (overrides launch.nodes).")
@click.option("--spot/--no-spot", default=None, help="Use preemptible capacity where the backend has it.")
@click.option("--detach", "-d", is_flag=True, default=None, help="Return after submitting; do not follow logs.")
@click.option("--dry-run", is_flag=True, help="Print the plan (the exact script) and submit nothing.")
@click.option("--name", help="Run name shown by `mudpuppy runs` (overrides launch.name).")
@click.option("--retries", type=click.IntRange(min=0), help="Restarts after preemption (overrides launch.retries).")
@click.option("--estimate/--no-estimate", "with_estimate", default=True,
              help="With --dry-run, also print `mudpuppy estimate`'s lines (to stderr).")
@click.option("--mfu", type=float, help="MFU the dry run's estimate assumes (default 0.30).")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2",
              help="Run a grid: one member per combination of the values (repeatable); see `runs --group`.")
@click.option("--max-parallel", type=click.IntRange(min=1),
              help="Sweeps on SLURM: at most N members at once (overrides launch.slurm.array_throttle).")
@click.pass_context
def launch(ctx: click.Context, config_path: str, backend: str | None, gpus: str | None, nodes: int | None,
           spot: bool | None, detach: bool | None, dry_run: bool, name: str | None, retries: int | None,
           with_estimate: bool, mfu: float | None, sweeps: tuple[str, ...], max_parallel: int | None) -> int:
    """Run CONFIG on a backend. Extra --key value pairs override config keys (e.g. --launch.slurm.partition gpu)."""
    from mudpuppy.launcher import dispatch
    from mudpuppy.launcher.cli import warn
    from mudpuppy.launcher.config import parse_override_args
    from mudpuppy.launcher.registry import Registry, new_run_id

    overrides = parse_override_args(list(ctx.args))
    overrides.update(dispatch.flag_overrides(backend=backend, gpus=gpus, nodes=nodes, spot=spot, detach=detach,
                                             name=name, retries=retries))
    if sweeps:
        from mudpuppy.launcher.cli.sweep_group import launch_sweep

        return launch_sweep(config_path, overrides, list(sweeps), dry_run=dry_run, max_parallel=max_parallel)
    prepared = dispatch.prepare(config_path, overrides, new_run_id())
    for line in prepared.warnings:
        warn(line)
    if dry_run:
        text = prepared.plan.render()
        click.echo(text, nl=False)
        if with_estimate:  # stderr: stdout stays exactly the plan (scripts and tests read it)
            from mudpuppy.launcher import estimate_report
            from mudpuppy.launcher.config import load_config

            try:
                report = estimate_report.build(load_config(config_path, overrides).config, mfu=mfu)
            except Exception as exc:  # the plan above is the dry run's answer; an estimate problem must not hide it
                warn(f"no estimate: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                return 0
            click.echo(("" if text.endswith("\n") else "\n") + "\n".join(estimate_report.render(report)), err=True)
        return 0
    bundle = prepared.bundle
    click.echo(f"bundle {bundle.name} ({'reused' if bundle.reused else 'built'}, {len(bundle.files)} file(s))",
               err=True)
    registry = Registry()
    record = dispatch.submit(prepared, config_path, registry)
    click.echo(f"run {record.id} submitted to {record.backend}: {record.handle}", err=True)
    from mudpuppy.launcher.cli.follow import follow_or_detach

    return follow_or_detach(record, registry, detach=bool(prepared.backend.launch.detach))
