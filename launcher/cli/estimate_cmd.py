"""``mudpuppy estimate CONFIG``: rows, tokens, steps, FLOPs, GPU-hours and price before anything is submitted."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from mudpuppy.launcher.cli.options import OVERRIDE_CONTEXT, config_argument


def estimate_options(func: Any) -> Any:
    for option in reversed([
        click.option("--mfu", type=float, help="Model-FLOPs utilisation to assume (default 0.30, stated)."),
        click.option("--peak-tflops", type=float, help="Peak dense bf16 TFLOP/s per GPU, for GPUs not in the table."),
        click.option("--sample-rows", type=click.IntRange(min=1), default=2000, show_default=True,
                     help="Tokenize at most this many raw rows when the dataset is not prepared yet."),
    ]):
        func = option(func)
    return func


@click.command(context_settings=OVERRIDE_CONTEXT)
@config_argument
@click.option("--backend", "-b", type=click.Choice(["local", "ssh", "slurm", "ray", "skypilot", "modal"]),
              help="Backend to price (overrides launch.backend).")
@click.option("--gpus", help="GPUs per node: H100:8 (overrides launch.gpus).")
@click.option("--nodes", type=click.IntRange(min=1), help="Number of nodes (overrides launch.nodes).")
@estimate_options
@click.option("--json", "as_json", is_flag=True, help="The numbers as one JSON object.")
@click.pass_context
def estimate(ctx: click.Context, config_path: str, backend: str | None, gpus: str | None, nodes: int | None,
             mfu: float | None, peak_tflops: float | None, sample_rows: int, as_json: bool) -> None:
    """Estimate CONFIG's training cost: data, optimizer steps, FLOPs, GPU-hours at an MFU, and price."""
    from mudpuppy.launcher import estimate_report
    from mudpuppy.launcher.cli.options import load_with_overrides
    from mudpuppy.launcher.dispatch import flag_overrides

    extra = list(ctx.args)
    for key, value in flag_overrides(backend=backend, gpus=gpus, nodes=nodes).items():
        extra += [f"--{key}", str(value)]
    cfg = load_with_overrides(config_path, extra).config
    report = estimate_report.build(cfg, mfu=mfu, peak=peak_tflops, sample_rows=sample_rows)
    if as_json:
        data = {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in vars(report).items()}
        data.update(on_demand_total=report.on_demand_total, spot_total=report.spot_total)
        click.echo(json.dumps(data, sort_keys=True, default=str))
        return
    for line in estimate_report.render(report):
        click.echo(line)
