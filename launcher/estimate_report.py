"""One estimate from a loaded config: data -> steps -> FLOPs -> GPU-hours -> price, each with its source.

Every part that cannot be computed (no runtime packages for the data, no ``config.json`` for the model, no
price list for the backend) becomes a note in the report instead of an error: ``launch --dry-run`` prints
the plan whatever the estimate knows. ``mudpuppy estimate`` prints the same lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mudpuppy.launcher import estimate as est
from mudpuppy.launcher.errors import UserError


@dataclass
class Report:
    backend: str
    gpu: str | None
    gpus_per_node: int
    nodes: int
    world_size: int
    data: est.DataSize | None = None
    steps: est.Steps | None = None
    shape: est.ModelShape | None = None
    lora: int | None = None
    flops: est.Flops | None = None
    compute: est.Compute | None = None
    price: Any = None  # estimate_prices.Price
    notes: list[str] = field(default_factory=list)
    mfu_default: bool = True

    @property
    def on_demand_total(self) -> float | None:
        if self.price is None or self.price.on_demand is None or not self.compute or self.compute.gpu_hours is None:
            return None
        return float(self.price.on_demand * self.compute.gpu_hours)

    @property
    def spot_total(self) -> float | None:
        if self.price is None or self.price.spot is None or not self.compute or self.compute.gpu_hours is None:
            return None
        return float(self.price.spot * self.compute.gpu_hours)


def world_size(launch: Any) -> tuple[str | None, int, int]:
    """(gpu kind, processes per node, world size) as the backends start them."""
    kind, count = est.parse_gpus(launch.gpus)
    section = getattr(launch, launch.backend, None)
    nproc = getattr(section, "nproc_per_node", None) or count or 1
    return kind, count, nproc * launch.nodes


def build(cfg: Any, *, mfu: float | None = None, peak: float | None = None,
          sample_rows: int | None = None, data: est.DataSize | None = None, prices: bool = True) -> Report:
    launch = cfg.launch
    kind, count, world = world_size(launch)
    report = Report(launch.backend, kind, count, launch.nodes, world, mfu_default=mfu is None)
    if data is None:
        try:
            from mudpuppy.launcher import estimate_data

            data = estimate_data.measure(cfg, sample_rows or estimate_data.DEFAULT_SAMPLE_ROWS)
        except ImportError as exc:
            report.notes.append(f"data not measured: the runtime's packages are missing ({exc.name}; "
                                "pip install 'mudpuppy[runtime]')")
        except UserError as exc:
            report.notes.append(f"data not measured: {exc.one_line()}")
    report.data = data
    if data is not None:
        report.steps = est.plan_steps(cfg, data.batches_rows, world)
    try:
        report.shape = est.load_shape(cfg.base_model)
        if cfg.adapter in ("lora", "qlora"):
            report.lora = est.lora_params(report.shape, cfg.lora_r or 8, _targets(cfg), bool(cfg.lora_target_linear))
    except UserError as exc:
        report.notes.append(f"no FLOPs: {exc.one_line()}")
    if report.shape is not None and data is not None and report.steps is not None:
        report.flops = est.training_flops(report.shape, data, report.steps, lora=report.lora,
                                          checkpointing=bool(cfg.gradient_checkpointing))
        report.compute = est.compute_hours(report.flops.total, kind, count, launch.nodes,
                                           mfu=mfu if mfu is not None else est.DEFAULT_MFU, peak=peak)
        report.notes.extend(report.compute.notes)
    if prices and kind:
        try:
            from mudpuppy.launcher import estimate_prices

            report.price = estimate_prices.for_launch(launch)
            if report.price is None and launch.backend in ("modal", "skypilot"):
                report.notes.append(f"no {launch.backend} price found for {kind} x {count}")
        except UserError as exc:
            report.notes.append(f"no price: {exc.one_line()}")
    if launch.backend not in ("modal", "skypilot"):
        report.notes.append(f"{launch.backend}: no price list (your own machines): GPU-hours only")
    return report


def _targets(cfg: Any) -> list[str] | None:
    targets = cfg.lora_target_modules
    if isinstance(targets, str):
        return [targets]
    return list(targets) if targets else None


def render(report: Report, now: float | None = None) -> list[str]:
    from mudpuppy.launcher.estimate_prices import age_days

    gpus = f"{report.nodes} x {report.gpus_per_node} x {report.gpu}" if report.gpu else f"{report.nodes} node(s)"
    lines = [f"estimate ({report.backend}, {gpus}, {report.world_size} process(es))"]
    data, steps = report.data, report.steps
    if data is not None and steps is not None:
        packed = f", {data.batches_rows:,} packed sequences" if data.batches_rows != data.rows else ""
        lines.append(f"  data     {data.rows:,} train rows, {data.tokens:,} tokens per epoch{packed}"
                     f"{f', {data.eval_rows:,} eval rows' if data.eval_rows else ''} [{data.source}]")
        lines.append(f"  steps    {steps.total:,} optimizer steps = {steps.epochs:.2f} epochs "
                     f"({steps.per_epoch:,} per epoch)")
    shape = report.shape
    if shape is not None:
        lora = f", LoRA {report.lora:,} trainable" if report.lora is not None else ", full fine-tune"
        lines.append(f"  model    {shape.total_params:,} parameters ({shape.matmul_params:,} in matmuls = N)"
                     f"{lora} [{shape.source}]")
    if report.flops is not None:
        f = report.flops
        lines.append(f"  FLOPs    {f.total:.3e} = ({f.formula}) over {f.trained_tokens:,.0f} tokens; "
                     f"attention {f.attention:.3e}")
    c = report.compute
    if c is not None and c.gpu_hours is not None and c.wall_hours is not None:
        mfu = f"MFU {c.mfu:.2f} ({'assumed default, no GPU measurement yet; --mfu' if report.mfu_default else 'given'})"
        lines.append(f"  compute  {c.gpu_hours:,.3g} GPU-hours on {c.gpu} at {c.peak_tflops:g} TFLOP/s peak bf16 "
                     f"(datasheet table {est.PEAK_TABLE_DATE}) x {mfu}; {c.wall_hours:,.3g} h wall on "
                     f"{c.gpus_per_node * c.nodes} GPU(s)")
    p = report.price
    if p is not None:
        parts = []
        if p.on_demand is not None:
            total = report.on_demand_total
            parts.append(f"on-demand ${p.on_demand:,.2f}/GPU-h" + (f" -> {_money(total)}" if total is not None else ""))
        if p.spot is not None:
            total = report.spot_total
            parts.append(f"spot ${p.spot:,.2f}/GPU-h" + (f" -> {_money(total)}" if total is not None else ""))
        lines.append(f"  price    {' | '.join(parts)} [{p.source}; {p.detail}; as of {p.as_of}, "
                     f"{age_days(p.as_of, now)} days old]")
    lines.extend(f"  note     {note}" for note in report.notes)
    return lines


def _money(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 else f"${amount:.2g}"
